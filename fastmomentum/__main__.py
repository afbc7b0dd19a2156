"""``python -m fastmomentum [bench|demo] ...`` (also the ``fastmomentum`` console script)."""
import sys

COMMANDS = {
    "bench": ("fastmomentum.bench", "benchmark report against the NumPy baseline and peers"),
    "demo": ("fastmomentum.demos", "why momentum works: runnable demos with plots"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m fastmomentum [COMMAND] [ARGS]\n\ncommands (default: bench):")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<8}{summary}")
        return 0
    name = argv.pop(0) if argv and argv[0] in COMMANDS else "bench"
    module = __import__(COMMANDS[name][0], fromlist=["main"])
    return module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
