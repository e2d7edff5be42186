"""`auto-review doctor`: can this host run the sandbox? (checks is the entry point.)

The host checks and the report (checks, finding), the cache, state and run dirs
(dirs), and the deciding item: a real sandbox started (start). May import
launcher.sandbox, launcher.cache and the shared base modules; never cli or image.
"""
