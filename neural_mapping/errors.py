"""Errors that the command-line tool reports as one clear line with exit code 2."""


class InputError(Exception):
    """Bad user input (a missing or malformed dataset, bag, map file or argument).

    The message names the file and what is wrong.
    """
