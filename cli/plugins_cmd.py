"""``rlx plugins list|show``: what is installed, and each component's config fields."""

from __future__ import annotations

import json
import typing

import typer

app = typer.Typer(help="Installed plugins and their components.", no_args_is_help=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Name, kind, family, version and status of every component."""
    from rlx.registry.cache import summary

    rows = summary().rows()  # cached: no plugin is imported while nothing changed
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    from rlx.cli.output import console

    table = Table("name", "kind", "family", "version", "status", "description")
    for r in rows:  # plugins' own text: "[ray]" is shown, not read as markup
        style = "red" if r["status"].startswith("error") else ("dim" if r["status"] == "disabled" else None)
        table.add_row(*(escape(str(r[k])) for k in ("name", "kind", "family", "version", "status", "description")),
                      style=style)
    console().print(table)


def _type_name(annotation: typing.Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return args.replace(", NoneType", " | None") if name in ("Union", "UnionType") else f"{name}[{args}]"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "None")


def _fields(model: typing.Any) -> list[dict[str, typing.Any]]:
    return [{"field": f, "type": _type_name(fi.annotation), "default": fi.default, "description": fi.description or ""}
            for f, fi in model.model_fields.items()]


@app.command("show")
def show(name: str = typer.Argument(..., help="A plugin (family), a component, or a core section: run, generation, "
                                           "optim."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each component's config fields (type, default, description) and registration; a
    core section's fields; a plugin's hooks."""
    from rlx.config import SETTINGS
    from rlx.errors import UsageError
    from rlx.registry import get_registry

    out: list[dict[str, typing.Any]] = []
    if name in SETTINGS:  # the sections every run has, listed like a component's
        out.append({"name": name, "kind": "section", "family": "rlx", "version": "", "meta": {},
                    "description": f"core settings: the {name} table of a config file, or --set {name}.FIELD=VALUE",
                    "fields": _fields(SETTINGS[name])})
    else:
        reg = get_registry()
        specs = [s for kind in reg.components.values() for s in kind.values() if name in (s.plugin, s.name)]
        info = reg.plugins.get(name)
        if not specs and info is not None and info.status != "ok":
            why = "disabled by RLX_DISABLE_PLUGINS" if info.status == "disabled" else f"failed to load: {info.error}"
            raise UsageError(f"plugin '{name}' is {why}")
        if not specs and info is None:
            import difflib

            known = sorted({s.name for k in reg.components.values() for s in k.values()} | set(reg.plugins)
                           | set(SETTINGS))
            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"no plugin, component or core section '{name}'; "
                             + (f"did you mean '{close[0]}'? " if close else "") + "see `rlx plugins list`")
        for s in specs:
            out.append({"name": s.name, "kind": s.kind, "family": s.plugin, "version": s.version,
                        "description": s.description + (f" (unavailable: {s.unavailable})" if s.unavailable else ""),
                        "meta": s.meta, "fields": _fields(s.config)})
        if not specs:  # a plugin of commands or lifecycle hooks only
            out.append({"name": name, "kind": "plugin", "family": name, "version": info.version, "meta": {},
                        "description": f"no components; hooks: {', '.join(info.hooks) or 'none'}", "fields": []})
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    from rich.markup import escape
    from rich.table import Table

    from rlx.cli.output import console as make_console

    console = make_console()
    for o in out:  # plugins' own text is shown as written, never read as rich markup
        meta = ", ".join(f"{k}={v}" for k, v in o["meta"].items() if v not in ((), [], {}, None, False))
        version = f" {o['version']}" if o["version"] else ""
        console.print(f"[bold]{escape(o['kind'])} {escape(o['name'])}[/bold] "
                      + escape(f"(plugin {o['family']}{version}) {meta}".rstrip()))
        if o["description"]:
            console.print(f"  {escape(o['description'])}")
        if o["fields"]:
            table = Table("field", "type", "default", "description")
            for f in o["fields"]:
                table.add_row(*(escape(str(x)) for x in (f["field"], f["type"], repr(f["default"]), f["description"])))
            console.print(table)


from rlx.cli.plugins_new import new  # noqa: E402  (rlx plugins new: no torch at import)

app.command("new")(new)
