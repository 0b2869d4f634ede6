"""`python -m servegate.models SPEC OUT_DIR`: generate (or confirm up to date) one model folder.

Run it with the vLLM venv's python and PYTHONPATH=<repo>/lib; prints the folder and its spec hash.
"""

from __future__ import annotations

import argparse
import sys

from servegate.errors import ServegateError
from servegate.models import load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servegate.models", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="model spec file, e.g. recipes/models/tiny-scripted.yaml")
    parser.add_argument("out_dir", help="folder to write (replaced atomically when out of date)")
    args = parser.parse_args(argv)
    from servegate.models.standin import is_standin

    if is_standin(args.spec):
        return _standin(args.spec, args.out_dir)
    from servegate.models.build import generate, read_stamp  # lazy: needs numpy and tokenizers (the vLLM venv)

    try:
        folder = generate(load_spec(args.spec), args.out_dir)
    except ServegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc.name} is not importable by {sys.executable}; run this with the vLLM "
              "venv's python (it has numpy and tokenizers)", file=sys.stderr)
        return 2
    print(f"{folder} {read_stamp(folder)['spec_hash']}")
    return 0


def _standin(spec_path: str, out_dir: str) -> int:
    """A real-width stand-in (kind: nemotron_h_standin): written into a fresh folder, renamed into place."""
    import shutil
    import tempfile
    from pathlib import Path

    from servegate.models.standin import count_params, load_standin
    from servegate.models.standin_write import write_standin

    try:
        spec = load_standin(spec_path)
    except ServegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = write_standin(spec, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except (OSError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{out} {spec.name}: {count_params(spec) / 1e9:.2f}B params, {written / 2**30:.2f} GiB {spec.quant}, "
          f"pattern {spec.pattern}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
