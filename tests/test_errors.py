"""The exception tree maps to HTTP statuses and the OpenAI envelope by class."""

from __future__ import annotations

from sovereign import errors


def test_every_error_class_has_status_type_and_envelope() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SovereignError)]
    assert len(classes) >= 15
    for cls in classes:
        exc = cls("something went wrong", param="field")
        envelope = exc.to_envelope()["error"]
        assert set(envelope) == {"message", "type", "param", "code"}
        assert envelope["message"] == "something went wrong" and envelope["param"] == "field"
        assert 400 <= cls.status_code <= 599
        assert cls.__name__ in errors.__doc__  # the docstring draws the whole tree


def test_specific_codes() -> None:
    assert errors.ContextLengthExceededError("x").to_envelope()["error"]["code"] == "context_length_exceeded"
    assert errors.ModelNotFoundError("x").status_code == 404
    assert errors.RequestTooLargeError("x").status_code == 413
    assert errors.EngineOverloadedError("x").status_code == 503
