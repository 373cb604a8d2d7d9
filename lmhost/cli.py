"""The `lmhost` command.

    lmhost serve [--host H] [--port P] [--models-dir D] [--state-dir D] [--workers N]
    lmhost demo  [--models-dir D]
    lmhost doctor [--json]
    lmhost ls [--json] [--llm|--embedding]          (client commands: lmhost.commands)
    lmhost ps [--json]
    lmhost load KEY [--identifier ID] [--ttl S] [--context-length N] [--gpu RATIO] [-y] [--json]
    lmhost unload ID | --all
    lmhost status [--json]

`serve` validates the settings, then replaces itself with gunicorn (so SIGTERM and SIGINT reach
gunicorn's master directly: graceful stop of the workers, then exit). Every flag has an
``LMHOST_*`` variable twin; a flag wins over the variable.

Exit codes: 0 done, 1 error (one line on stderr, never a traceback), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lmhost import __version__, commands
from lmhost.client import CliError


def _settings_from(args, names, check=lambda settings: None):
    """The settings, with the flags `names` of `args` on top; `check(settings)` may refuse
    them. A bad value exits with one line naming the flag or variable."""
    from config import ConfigError, env_name, load_settings
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    try:
        settings = load_settings(**overrides)
        check(settings)
        return settings
    except ConfigError as exc:
        message = str(exc)
        for name in names:  # named as the user gave it: the flag, else the variable
            if message.startswith(f"{name}:"):
                given = "--" + name.replace("_", "-") if name in overrides else env_name(name)
                message = given + message[len(name):]
        sys.exit(f"lmhost: configuration error: {message}")


def _servable(settings) -> None:
    """What `serve` refuses beyond bad values: no tokens on a non-loopback host, a tokens file
    that cannot be read."""
    from config import check_exposure, read_tokens
    check_exposure(settings)
    read_tokens(settings)


def cmd_serve(args) -> int:
    import config
    from config import to_env
    settings = _settings_from(args, ("host", "port", "models_dir", "state_dir", "workers"),
                              _servable)
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = Path(config.__file__).with_name("gunicorn.conf.py")
    env = {**os.environ, **to_env(settings)}
    argv = [sys.executable, "-m", "gunicorn", "--config", str(conf)]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def cmd_demo(args) -> int:
    """The real instruct model (SmolLM2, linked or copied from its installed package) and a
    tiny synthetic embedding model, when the models dir holds no model yet."""
    from lmhost import realmodel, synthetic
    settings = _settings_from(args, ("models_dir",))
    models_dir = settings.models_dir
    existing = sorted(models_dir.glob("*/*/*.gguf")) if models_dir.is_dir() else []
    if existing:
        print(f"{models_dir} already holds {len(existing)} model file(s); no demo models written")
        return 0
    try:
        real = realmodel.place_smollm2(models_dir)
    except realmodel.RealModelMissing as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {real} (llm, {realmodel.KEY}: a real instruct model, "
          f"{real.stat().st_size} bytes)")
    embed = synthetic.write_bert_embedding(models_dir.joinpath(*synthetic.DEMO_MODELS[2]), seed=2,
                                           file_type="F16", name="Tiny Embed")
    print(f"wrote {embed.path} ({embed.kind}, {embed.architecture}, "
          f"{embed.path.stat().st_size} bytes)")
    return 0


def cmd_doctor(args) -> int:
    from lmhost import doctor
    return doctor.main(as_json=args.json)


def add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="run the service under gunicorn, in the foreground")
    serve.add_argument("--host", help="address to bind (LMHOST_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="TCP port (LMHOST_PORT, default 1234)")
    serve.add_argument("--models-dir", dest="models_dir",
                       help="models directory (LMHOST_MODELS_DIR, default ~/.lmhost/models)")
    serve.add_argument("--state-dir", dest="state_dir",
                       help="state directory (LMHOST_STATE_DIR, default ~/.lmhost/state)")
    serve.add_argument("--workers", help="HTTP worker processes (LMHOST_WORKERS, default 2)")
    serve.set_defaults(func=cmd_serve)


def add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="write small demo models when the models dir has none")
    demo.add_argument("--models-dir", dest="models_dir",
                      help="models directory (LMHOST_MODELS_DIR, default ~/.lmhost/models)")
    demo.set_defaults(func=cmd_demo)


def add_doctor(sub) -> None:
    doctor = sub.add_parser("doctor", help="check that lmhost can run on this host; say how to "
                                           "fix what cannot (exit 1 when something fails)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=cmd_doctor)


# One entry per subcommand, in `lmhost --help`'s order: a function that adds its parser.
SUBCOMMANDS = (add_serve, add_demo, add_doctor, commands.add_ls, commands.add_ps,
               commands.add_load, commands.add_unload, commands.add_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmhost", description="Self-hosted model server.")
    parser.add_argument("--version", action="version", version=f"lmhost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"lmhost: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, always
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lmhost ls | head -1`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
