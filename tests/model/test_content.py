"""Content parts as values: their JSON shape, the messages that hold them, and the prompt checks."""

from __future__ import annotations

import base64

import pytest

from sessionhive import FilePart, ImagePart, InvalidConfig, Message, TextPart
from sessionhive.model.content import part_from_dict
from sessionhive.model.validate import MAX_PART_BYTES, check_prompt

IMAGE = bytes(range(256))


def test_a_message_of_parts_round_trips_and_its_text_is_the_text_of_its_parts() -> None:
    message = Message.user(
        "ignored",
        (
            TextPart("first"),
            ImagePart(IMAGE, "image/webp"),
            ImagePart(url="https://example.com/a.png"),
            TextPart("second"),
            FilePart(b"%PDF", "application/pdf", name="a.pdf"),
        ),
    )
    assert message.text == "first\n\nsecond"
    data = message.to_dict()
    assert data["parts"][1] == {
        "type": "image",
        "media_type": "image/webp",
        "data": base64.b64encode(IMAGE).decode(),
    }
    assert Message.from_dict(data) == message


def test_a_stored_text_message_of_before_parts_loads_unchanged() -> None:
    stored = {"role": "user", "text": "hello"}  # what every earlier sessionhive wrote
    message = Message.from_dict(stored)
    assert message == Message.user("hello") and message.parts == ()
    assert message.to_dict() == stored


def test_a_text_prompt_has_no_parts_and_a_prompt_of_parts_has_their_text() -> None:
    assert check_prompt("hi") == ("hi", ())
    parts = (TextPart("look"), ImagePart(IMAGE, "image/png"))
    assert check_prompt(list(parts)) == ("look", parts)


@pytest.mark.parametrize(
    ("prompt", "detail"),
    [
        ([], "at least one content part"),
        (b"bytes", "a string or a sequence of content parts"),
        (3, "a string or a sequence of content parts"),
        (["text"], r"prompt\[0\] must be a TextPart, ImagePart or FilePart, got str"),
        ([ImagePart(IMAGE, "image/tiff")], r"prompt\[0\]\.media_type must be one of .*image/png"),
        ([ImagePart(IMAGE)], r"media_type must be one of"),
        ([ImagePart(IMAGE, "image/png", url="https://x")], "either data .* or a url, not both"),
        ([ImagePart()], "either data"),
        ([ImagePart(url="file:///etc/passwd")], "http"),
        ([TextPart("a"), FilePart(b"%PDF", "application/zip")], r"prompt\[1\]\.media_type"),
        ([FilePart(path="../outside.pdf")], "inside the session's workspace"),
        ([FilePart(path="a/../../outside.pdf")], "inside the session's workspace"),
        ([FilePart(path="/etc/passwd")], "inside the session's workspace"),
        ([FilePart(path="a\0b")], "NUL"),
        ([ImagePart("notbytes", "image/png")], r"data must be bytes"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_prompt_is_refused_with_the_part_named(prompt: object, detail: str) -> None:
    with pytest.raises(InvalidConfig, match=detail):
        check_prompt(prompt)


def test_a_part_past_the_size_limit_is_refused() -> None:
    check_prompt([ImagePart(bytes(MAX_PART_BYTES), "image/png")])
    with pytest.raises(InvalidConfig, match=rf"holds {MAX_PART_BYTES + 1} bytes; the limit of one part is"):
        check_prompt([ImagePart(bytes(MAX_PART_BYTES + 1), "image/png")])


def test_part_json_is_checked() -> None:
    with pytest.raises(ValueError, match="type must be one of"):
        part_from_dict({"type": "video"})
    with pytest.raises(ValueError, match="not valid base64"):
        part_from_dict({"type": "file", "data": "not base64!"})
    assert part_from_dict({"type": "file", "path": "docs/a.pdf"}) == FilePart(path="docs/a.pdf")
