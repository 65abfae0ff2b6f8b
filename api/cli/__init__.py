"""The `briefing` command line: one module per command group, wired together by `api.cli.main`.

`common` holds what every command shares (the user-facing error, progress lines, argument types, the optional
evaluation extra), `inputs` the file readers and `db` the store a command names; `main` builds the parser from
the command modules' `add_parsers(sub)`, loading only those the command line names, and runs the chosen
command. Command modules import `common`, `inputs` and `db`, never `main` or each other.
"""
