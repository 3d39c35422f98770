"""``check_environment``: seeded, deterministic task sampling, a fixed held-out split and
a ``state_dict`` that resumes sampling exactly."""

from __future__ import annotations

from typing import Any

from rlx.testing._support import (
    Subject,
    check_config,
    check_registration,
    difference,
    json_state,
    lookup,
    registry,
    validated,
)

SAMPLE = 8  # tasks per draw: enough that two seeds of a random environment differ


def check_environment(name: str, config: dict[str, Any] | None = None, *, seed: int = 0) -> list[str]:
    """Run every environment check on the registered environment ``name`` built with
    ``config`` (overrides of its config model) and ``seed``; returns the checks passed.

    Text and preference environments (``sample``): same seed, same tasks; another seed,
    other tasks; the held-out split is the same on every call, for a fresh environment and
    after sampling; ``state_dict`` is JSON and, loaded into a fresh environment, continues
    sampling with the same tasks. Control environments (``reset``/``step``): same seed,
    same observations and rewards under the same actions (the kind's default policy's);
    another seed, other first observations; ``eval_episodes`` gives the same result twice;
    ``state_dict`` is JSON and survives a round trip. Environments of other kinds get the
    registration, config and state checks here and the rest through ``check_kind``."""
    from rlx.environment import ControlEnvironment, PreferenceEnvironment, TextEnvironment

    subject, given = Subject("environment", name), dict(config or {})
    reg = registry()
    spec = lookup(subject, reg)
    check_registration(subject, reg, spec)
    check_config(subject, spec, given)
    values = validated(subject, "env", spec, given)

    def make(s: int) -> Any:
        with subject.check("build", fix="fix the factory, or pass the settings it needs in config="):
            env = spec.build(values, seed=s)
        return env

    env = make(seed)
    if isinstance(env, (TextEnvironment, PreferenceEnvironment)):
        _check_sampling(subject, make, env, seed)
    elif isinstance(env, ControlEnvironment):
        _check_control(subject, reg, spec, make, env, seed)
    else:
        with subject.check("state round trip"):
            state = json_state(subject, "state round trip", env.state_dict(), "state_dict()")
            fresh = make(seed)
            fresh.load_state_dict(state)
            _same_state(subject, fresh, state)
    return subject.checks()


def _draw(subject: Subject, env: Any, n: int) -> list[Any]:
    from rlx.environment import PreferenceEnvironment

    tasks = env.sample(n)
    if not isinstance(tasks, list) or len(tasks) != n:
        got = f"{len(tasks)} tasks" if isinstance(tasks, list) else f"a {type(tasks).__name__}"
        raise subject.fail("sample", f"sample({n}) returned {got}", f"return a list of exactly {n} task dicts")
    keys = ("prompt", "chosen", "rejected") if isinstance(env, PreferenceEnvironment) else ("prompt",)
    for i, task in enumerate(tasks):
        bad = [k for k in keys if not isinstance(task, dict) or not isinstance(task.get(k), str)]
        if bad:
            raise subject.fail("sample", f"task {i} of sample({n}) has no string '{bad[0]}'",
                               f"give every task the keys {', '.join(keys)} (strings)")
    return tasks


def _held_out(env: Any) -> list[Any]:
    from rlx.environment import PreferenceEnvironment

    return env.eval_pairs() if isinstance(env, PreferenceEnvironment) else env.eval_tasks()


def _check_sampling(subject: Subject, make: Any, env: Any, seed: int) -> None:
    with subject.check("sample"):
        first = _draw(subject, env, SAMPLE)
    with subject.check("deterministic sampling"):
        again = _draw(subject, make(seed), SAMPLE)
        found = difference(first, again, "tasks")
        if found:
            raise subject.fail("deterministic sampling", f"two environments built with seed {seed} sample different "
                                                         f"tasks ({found})",
                               "draw from an RNG seeded with the seed argument (random.Random(f'name:{seed}')), never "
                               "from the global random module, time or unordered sets")
    with subject.check("seed used"):
        other = _draw(subject, make(seed + 1), SAMPLE)
        if difference(first, other) is None:
            raise subject.fail("seed used", f"seeds {seed} and {seed + 1} sample the same {SAMPLE} tasks",
                               "derive the sampling RNG from the seed argument, so that runs with other seeds see "
                               "other tasks")
    with subject.check("fixed held-out split"):
        split = _held_out(env)
        if not isinstance(split, list):
            raise subject.fail("fixed held-out split", f"the held-out split is a {type(split).__name__}",
                               "return a list of tasks")
        for what, other_split in (("a second call", _held_out(env)), ("a fresh environment", _held_out(make(seed)))):
            found = difference(split, other_split, "held-out")
            if found:
                raise subject.fail("fixed held-out split", f"the held-out split differs on {what} ({found})",
                                   "build the split once per seed from its own seeded RNG or the data's order, "
                                   "independent of training draws")
    with subject.check("state round trip"):
        env.sample(3)
        state = json_state(subject, "state round trip", env.state_dict(), "state_dict() after sampling")
        expected = env.sample(5)
        fresh = make(seed)
        fresh.load_state_dict(state)
        found = difference(expected, fresh.sample(5), "tasks")
        if found:
            raise subject.fail("state round trip", f"a fresh environment loaded with state_dict() samples other "
                                                   f"tasks than the original did next ({found})",
                               "put everything sampling depends on (RNG state, position in the data) in state_dict "
                               "and restore it in load_state_dict: resumed runs must see the same tasks")


def _check_control(subject: Subject, reg: Any, spec: Any, make: Any, env: Any, seed: int) -> None:
    import torch

    from rlx.testing._support import lookup as find

    with subject.check("policy to act with"):
        kind = find(subject, reg, "kind", spec.meta["kind"])
        policy_spec = find(subject, reg, "policy", kind.meta["default_policy"] or "")
        torch.manual_seed(seed)
        policy = policy_spec.build(policy_spec.config(), env=env)
    with subject.check("reset"):
        obs = env.reset()
        n = int(env.num_envs)
        if obs.shape[0] != n:
            raise subject.fail("reset", f"reset() gave {obs.shape[0]} observations for num_envs={n}",
                               "return one observation row per environment copy")
    twin = make(seed)
    with subject.check("deterministic steps"):
        found = difference(obs, twin.reset(), "reset()")
        for t in range(8):
            if found:
                break
            with torch.no_grad():
                actions = policy.act(obs, deterministic=True)[0]
            mine, theirs = env.step(actions), twin.step(actions)
            found = difference(list(mine[:4]), list(theirs[:4]), f"step {t} (obs, reward, terminated, truncated)")
            obs = mine[0]
        if found:
            raise subject.fail("deterministic steps", f"two environments built with seed {seed} differ under the same "
                                                      f"actions ({found})",
                               "seed every copy from the seed argument in reset (envs.reset(seed=seed))")
    with subject.check("seed used"):
        if difference(make(seed).reset(), make(seed + 1).reset()) is None:
            raise subject.fail("seed used", f"seeds {seed} and {seed + 1} give the same first observations",
                               "seed the environment copies from the seed argument")
    with subject.check("fixed held-out split"):
        first, second = env.eval_episodes(policy), env.eval_episodes(policy)
        found = difference(first, second, "eval_episodes")
        if found:
            raise subject.fail("fixed held-out split", f"eval_episodes gives other results on a second call with the "
                                                       f"same deterministic policy ({found})",
                               "run held-out episodes on copies seeded from the environment's seed, not its live RNG")
    with subject.check("state round trip"):
        state = json_state(subject, "state round trip", env.state_dict(), "state_dict() after stepping")
        fresh = make(seed)
        fresh.reset()
        fresh.load_state_dict(state)
        _same_state(subject, fresh, state)
    for e in (env, twin):
        getattr(e, "close", lambda: None)()


def _same_state(subject: Subject, fresh: Any, state: dict[str, Any]) -> None:
    again = json_state(subject, "state round trip", fresh.state_dict(), "state_dict() after load_state_dict")
    found = difference(state, again, "state")
    if found:
        raise subject.fail("state round trip", f"state_dict() after load_state_dict(state) is not that state ({found})",
                           "restore every field state_dict() saves")
