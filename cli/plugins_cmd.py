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
    from rich.table import Table

    from rlx.cli.output import console

    table = Table("name", "kind", "family", "version", "status", "description")
    for r in rows:
        style = "red" if r["status"].startswith("error") else ("dim" if r["status"] == "disabled" else None)
        table.add_row(r["name"], r["kind"], r["family"], r["version"], r["status"], r["description"], style=style)
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


@app.command("show")
def show(name: str = typer.Argument(..., help="A plugin (family) or component name."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each component's config fields: type, default and description."""
    from rlx.errors import UsageError
    from rlx.registry import get_registry

    reg = get_registry()
    specs = [s for kind in reg.components.values() for s in kind.values() if name in (s.plugin, s.name)]
    if not specs:
        info = reg.plugins.get(name)
        if info is not None and info.status != "ok":
            why = "disabled by RLX_DISABLE_PLUGINS" if info.status == "disabled" else f"failed to load: {info.error}"
            raise UsageError(f"plugin '{name}' is {why}")
        import difflib

        known = sorted({s.name for k in reg.components.values() for s in k.values()} | set(reg.plugins))
        close = difflib.get_close_matches(name, known, n=1)
        raise UsageError(f"no plugin or component '{name}'; " + (f"did you mean '{close[0]}'? " if close else "")
                         + "see `rlx plugins list`")
    out = []
    for s in specs:
        fields = [{"field": f, "type": _type_name(fi.annotation), "default": fi.default,
                   "description": fi.description or ""} for f, fi in s.config.model_fields.items()]
        out.append({"name": s.name, "kind": s.kind, "family": s.plugin, "version": s.version,
                    "description": s.description, "meta": s.meta, "fields": fields})
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    from rich.table import Table

    from rlx.cli.output import console as make_console

    console = make_console()
    for o in out:
        meta = ", ".join(f"{k}={v}" for k, v in o["meta"].items())
        console.print(f"[bold]{o['kind']} {o['name']}[/bold] (plugin {o['family']} {o['version']}) {meta}")
        if o["description"]:
            console.print(f"  {o['description']}")
        table = Table("field", "type", "default", "description")
        for f in o["fields"]:
            table.add_row(f["field"], f["type"], repr(f["default"]), f["description"])
        console.print(table)
