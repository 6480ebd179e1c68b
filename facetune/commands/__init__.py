"""One module per `facetune` subcommand; each exposes `add_parser(subparsers)`.

A subcommand's parser sets `func`, called with the parsed arguments; it returns the exit code.
"""
