"""Reading the small JSON files beside a model: config.json, preprocessor_config.json,
tokenizer_config.json, a sharded checkpoint's index, a training run's state.

Each caller names the exception a bad file raises (``ConfigError`` for a config, ``CheckpointError``
for a checkpoint ...), so the error says which kind of file was wrong as well as where.
"""

from __future__ import annotations

import json
import os


def read_json_object(path: str | os.PathLike, *, error: type[Exception], not_found: str | None = None) -> dict:
    """The JSON object in ``path``. Every way the file can be wrong -- missing, not UTF-8, not
    JSON, JSON but not an object -- raises ``error`` with a message that names the file;
    ``not_found`` replaces the message for a missing file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise error(not_found or f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
