"""The command line: argv to a command (main is the entry point).

main dispatches sandboxed commands to launcher.sandbox without argparse, after
grammar (a table of the gateway's parsers) checked their arguments on the host; the
launcher's own commands (`bundle`, `cache`, `doctor`, `--version`) are parsed in
commands, the `cache` verbs run in cachecmd and cacheversion; helptext is `--help`. May import every
launcher package but never bootstrap (the zipapp's __main__, which imports this one).
"""
