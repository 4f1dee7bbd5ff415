"""The one error type users see: a single line that names the bad key or file and the fix."""


class BenchError(Exception):
    """A user-facing error. The CLI prints it as one line and exits non-zero, without a traceback."""


def choices_error(kind: str, got: object, valid: list[str], where: str = "") -> BenchError:
    loc = f" (at {where})" if where else ""
    return BenchError(f"unknown {kind} {got!r}{loc}; valid choices: {', '.join(sorted(valid))}")
