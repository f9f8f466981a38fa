"""The project's exceptions. Library code raises these; only the CLI edge turns them into exits.

A message is one line that names the file/URL/field, shows the bad value and says the fix.
"""


def one_line(message: object) -> str:
    """``message`` (an exception or text) on one line: whitespace runs, newlines included, become
    one space."""
    return " ".join(str(message).split())


class ProjectError(Exception):
    """Base of every user-facing error: tasks print ``str(err)`` on one line and exit with
    ``exit_code`` (1 unless a child process's own code is passed on)."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(ProjectError):
    """A config, matrix, experiment YAML or command-line option is wrong."""


class StagingError(ProjectError):
    """Data could not be staged (missing source, bucket, object, disk space, …)."""


class CorruptDataError(StagingError):
    """Bytes that arrived do not match their source's size or checksum, or COCO JSON is malformed."""


class BuildError(ProjectError):
    """An image build, smoke test or compatibility rule failed."""


class TrainingError(ProjectError):
    """A training run could not start or finish (bad model name, missing cluster, …)."""
