"""``completion``: the shell completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

__all__ = ["COMPLETE_VAR", "completion"]

COMPLETE_VAR = "_CLCTL_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  eval "$(clctl completion bash)"   (e.g. in ~/.bashrc)
    zsh:   eval "$(clctl completion zsh)"    (e.g. in ~/.zshrc)
    fish:  clctl completion fish > ~/.config/fish/completions/clctl.fish
    """
    cls = get_completion_class(shell)
    assert cls is not None  # click registers all three
    comp = cls(ctx.find_root().command, {}, "clctl", COMPLETE_VAR)
    # ShellComplete.source(), but without BashComplete's check that runs `bash --version`.
    click.echo(comp.source_template % comp.source_vars())
