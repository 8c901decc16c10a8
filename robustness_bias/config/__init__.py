"""The configuration: each setting's type, range and default declared once, as Hydra structured configs.

- ``rules``: what a setting must be, and checking values by it (plain Python);
- ``job``, ``data``, ``models``, ``estimators``, ``training``: the schemas of conf/'s groups, with their
  defaults; ``schema``: all of them by name;
- ``store``: conf/ and Hydra's ConfigStore, where the schemas are registered (imports Hydra);
- ``checks``: a composed config checked before a job reads any data;
- ``fingerprint``: what of the settings shapes results, hashed;
- ``messages``: each way a config can be wrong, in one line with its fix.

Hydra checks types while it composes the config, so ``trainer.max_epochs=abc`` stops there; ranges and
choices are checked when a job starts (``checks.checked``). Either way a bad setting is one line naming
the key, the value, the rule and a fix. Importing this package costs nothing: the estimators and the
Python API read the schemas without Hydra.
"""
