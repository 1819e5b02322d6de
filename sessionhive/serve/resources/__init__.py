"""The /v1 API's resources, one module each; every handler declares its route where it is defined."""
