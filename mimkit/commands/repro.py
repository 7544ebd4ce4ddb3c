"""`mimkit repro NAME [--quick]`: reproduce a seed paper's central claim at CPU scale and write
report.md with plots (see mimkit/repro/); `mimkit repro --list` names them."""
from .arguments import thread_count


def run(args) -> None:
    from ..errors import ConfigError
    from ..repro import REPROS, run_repro

    if args.list or not args.name:
        width = max(map(len, REPROS))
        print("\n".join(f"{name:<{width}}  {about}" for name, (_, about) in REPROS.items()))
        return
    names = list(REPROS) if args.name == "all" else [args.name]
    if args.out and len(names) > 1:
        raise ConfigError("--out names one report folder; with `all` leave it out (each report goes to its default)")
    for name in names:
        path = run_repro(name, out=args.out, work=args.work, quick=args.quick, threads=args.threads,
                         progress=not args.no_progress)
        print(f"report written to {path}")


def register(sub) -> None:
    p = sub.add_parser("repro", help="reproduce a paper's central claim on Fashion-MNIST and write a report",
                       description="Train (or reuse) the small runs of one sweep, evaluate them and write "
                                   "report.md with PNG plots and, per claim, the paper's result, ours and "
                                   "whether it reproduced. Full runs take up to ~30 min on 2 CPU cores and "
                                   "write to docs/repro/NAME; --quick (about a minute) writes to "
                                   "runs/repro-quick/NAME/report. Runs are kept under --work and reused "
                                   "when asked again with the same config.")
    p.add_argument("name", nargs="?", help="the reproduction (see --list), or `all`")
    p.add_argument("--list", action="store_true", help="list the reproductions")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes: the whole pipeline in about a minute")
    p.add_argument("--out", help="report folder (default docs/repro/NAME, or runs/repro-quick/NAME/report)")
    p.add_argument("--work", help="where the runs go (default runs/repro, or runs/repro-quick)")
    p.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
