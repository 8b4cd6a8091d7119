"""breachbook: the data-breach response plan as code, run live, as a drill or as a tabletop."""

__version__ = "0.1.0"
