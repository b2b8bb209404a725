"""``kinevid weights list | fetch NAME | import PATH``: the ViTPose weights cache.

``fetch`` downloads a registry entry and verifies its sha256 before it enters the cache; an entry
whose full hash is not on record needs ``--trust`` (its hash is then pinned). ``import`` brings a
file downloaded elsewhere, for machines without network access.
"""
from __future__ import annotations

import argparse
import sys
import warnings

__all__ = ["add_weights_parser", "run_weights_list", "run_weights_fetch", "run_weights_import"]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_weights_list(args: argparse.Namespace) -> int:
    from models.checkpoints import cache_dir, list_weights

    cache = cache_dir(args.cache)
    print(f"weights cache: {cache}")
    rows = list_weights(cache)
    width = max(len(s.name) for s, _ in rows)
    for spec, path in rows:
        state = f"cached {_mb(path.stat().st_size)}" if path else "not cached"
        pin = "sha256 known" if spec.sha256 else "sha256 unknown (fetch needs --trust)"
        print(f"  {spec.name:<{width}}  {spec.variant.upper()} {spec.head:<7} {spec.num_keypoints:>3} kp "
              f"{spec.input_size[0]}x{spec.input_size[1]} {spec.decoder:<4}  {state}; {pin}")
    return 0


def _progress():
    from inference.progress import ProgressBar

    state = {"bar": None}

    def update(done: int, total: int | None) -> None:
        if total is None:
            return
        if state["bar"] is None:
            state["bar"] = ProgressBar("download", unit="MB").__enter__()
        state["bar"].update(done // 1_000_000, total // 1_000_000)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)

    return update, close


def run_weights_fetch(args: argparse.Namespace) -> int:
    from models.checkpoints import fetch, get_spec

    spec = get_spec(args.name, args.cache)
    print(f"fetching {spec.name} from {spec.url}")
    update, close = _progress()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = fetch(spec, cache=args.cache, trust=args.trust, progress=update, force=args.force)
        finally:
            close()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{spec.name}: {path}")
    return 0


def run_weights_import(args: argparse.Namespace) -> int:
    from models.checkpoints import import_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name, path = import_checkpoint(args.path, name=args.name, trust=args.trust, cache=args.cache)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"imported {args.path} as {name}: {path}")
    return 0


def add_weights_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("weights", help="list, download or import ViTPose weights",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=None,
                   help="weights folder (default: $KINEVID_CACHE/weights or ~/.cache/kinevid/weights)")
    sub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    q = sub.add_parser("list", help="known weights and what is cached")
    q.set_defaults(func=run_weights_list)

    q = sub.add_parser("fetch", help="download a registry entry into the cache (sha256-checked)")
    q.add_argument("name", help="registry name, e.g. vitpose-b-coco (see `kinevid weights list`)")
    q.add_argument("--trust", action="store_true",
                   help="accept a file whose full sha256 is not on record, and pin its hash")
    q.add_argument("--force", action="store_true", help="download again even when cached")
    q.set_defaults(func=run_weights_fetch)

    q = sub.add_parser("import", help="copy a checkpoint file into the cache (offline machines)")
    q.add_argument("path", help="a .pth checkpoint (official ViTPose / mmpose layout)")
    q.add_argument("--name", default=None,
                   help="registry name it is (or a new name to register it under)")
    q.add_argument("--trust", action="store_true",
                   help="accept it although no full sha256 on record vouches for it")
    q.set_defaults(func=run_weights_import)
    return p
