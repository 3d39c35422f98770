"""The ``preferences`` environment: registration only, so listing plugins stays cheap."""

from rlx.hookspecs import hookimpl
from rlx.plugins.preferences.config import PreferencesConfig


@hookimpl
def rlx_register_environments(register):
    register("preferences", "rlx.plugins.preferences.env:PreferencesEnv", config=PreferencesConfig,
             kind="preference", requires=("arithmetic",),
             description="(prompt, chosen, rejected) pairs from JSONL/CSV/parquet, or built from arithmetic")
