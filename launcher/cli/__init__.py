"""The command line: argv to a command (main is the entry point).

main dispatches sandboxed commands to launcher.sandbox without argparse; the
launcher's own commands (`bundle`, `cache`, `doctor`, `--version`) are parsed in
commands, the `cache` verbs run in cachecmd and cacheversion. May import every
launcher package but never bootstrap (the zipapp's __main__, which imports this one).
"""
