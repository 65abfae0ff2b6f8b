"""The `briefing` command line: one module per command group, wired together by `api.cli.main`.

`common` holds what the commands share (the user-facing error, progress lines, readers, argument
types, the optional evaluation extra); `main` builds the parser from each command module's
`add_parsers(sub)` and runs the chosen command. Command modules import `common`, never `main`.
"""
