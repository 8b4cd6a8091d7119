"""Errors that reach users, Prefect states and logs.

Every message here must name the file and field at fault and must never carry customer
personal data: Prefect stores exception messages in plain text.
"""


class BreachbookError(Exception):
    """Base of all errors breachbook reports to a user as one clear line."""


class PlaybookError(BreachbookError):
    """The playbook YAML is malformed or refers to something that does not exist."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        head = problems[0] if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{path}: {head}{more}")


class IncidentFileError(BreachbookError):
    """The incident (alert) file cannot be read or does not validate."""


class CustomerDataError(BreachbookError):
    """The customer database cannot be read, or a record in it is unusable."""


class DataSourceError(BreachbookError):
    """The data-source file (the customer schema's mapping) is malformed, or an incident
    names a table or column it does not map."""


class TemplateFieldError(BreachbookError):
    """A letter or statement template refers to a field the context does not provide."""


class LiveNotConfirmed(BreachbookError):
    """LIVE mode was asked for without the caller naming the incident to confirm it."""


class DrillWriteBlocked(BreachbookError):
    """A write was attempted through a connector during a drill; the transport refused it."""


class OutputFolderError(BreachbookError):
    """The output folder cannot be used for this run."""


class UnknownSetting(BreachbookError):
    """A BREACHBOOK_* environment variable names no setting; ignored, a misspelt one would
    leave the run on a default without a word."""


class ContainmentRefused(BreachbookError):
    """The database or cloud refused a containment change (a missing privilege, an unknown
    role, key or host); definite, so it is recorded as failed, not retried."""


class MailRefused(BreachbookError):
    """The mail server refused one letter for good (a 5xx reply, a refused recipient): the
    message names the letter's key and the reply code, never the address."""

    def __init__(self, key: str, code: int, what: str) -> None:
        self.code = code
        super().__init__(f"letter {key}: {what} refused by the mail server (reply {code})")


class MailUnavailable(BreachbookError):
    """The mail server could not be reached or kept answering 'try later': the letter was
    not sent, and a later run tries it again."""
