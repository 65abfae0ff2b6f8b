"""Run the `briefing` command line in-process, as a user would: exit status and the error message."""

from api.cli.common import CliError
from api.cli.main import build_parser


def run_briefing(argv: list[str]) -> tuple[int, str]:
    """(exit status, error message): what `briefing ARGV` returns and prints after "briefing: "."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args), ""
    except CliError as exc:
        return 2, str(exc)
