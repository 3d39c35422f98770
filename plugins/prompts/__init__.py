"""The ``prompts`` environment: registration only, so listing plugins stays cheap."""

from rlx.hookspecs import hookimpl
from rlx.plugins.prompts.config import PromptsConfig


@hookimpl
def rlx_register_environments(register):
    register("prompts", "rlx.plugins.prompts.env:PromptsEnv", config=PromptsConfig, kind="text",
             default_reward="verifier",
             description="Prompts (and optional reference answers) from JSONL/CSV/parquet, for online objectives")
