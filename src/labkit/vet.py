"""Refuse a lab file that reaches outside its lab, before any of it runs.

The grader reads each lab file of a submission as bytes and checks its syntax tree; it never
imports or runs it. A file is refused, with the line and the reason, when it

- imports a module outside the allowlist its labs state (``allowed_imports`` in course.toml, the
  union over the labs that list the file), or uses ``from X import *``;
- uses a dynamic escape hatch: ``eval``, ``exec``, ``compile``, ``__import__``, ``open`` (unless
  its labs grant file access: ``pathlib`` or ``os`` among their imports),
  ``globals()``/``locals()``/``vars()``, a ``getattr`` whose attribute name is computed, dunder
  walks (``__class__.__subclasses__``, ``__globals__``, ``__builtins__``, ``__code__`` ...), frame
  and code objects (``f_globals``, ``f_back``, ``tb_frame`` ...), or reaches ``sys``, ``os``
  (beyond ``os.path`` and friends), ``builtins``, ``subprocess``, ``ctypes``, ``importlib``,
  ``inspect``, ``gc``, ``pickle`` ... through the attributes of an allowed module;
- changes another module: assigns or deletes an attribute or item of an imported name
  (``torch.allclose = ...``, ``torch.Tensor.__eq__ = ...``, ``F.linear = ...``), calls
  ``setattr``/``delattr`` on one, or hands a module or a class of another module around as a
  value (code that receives ``torch.Tensor`` could rebind its methods for every test);
- touches another module's private names (``torch._C``) or process-wide switches that change how
  torch behaves for the tests (global module hooks, torch function/dispatch modes, ``torch.library``,
  default dtype/device), or loads pickles (``torch.load(weights_only=False)``).

This is a screen, not a proof: it stops the direct and the moderately clever ways in, and the
grader's runtime checks (see ``labkit.sandbox``) catch much of what slips through. It is strict on
purpose; the messages say what to write instead, and ``pytest`` warns a learner before they submit.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Largest lab file the grader reads; a real one is a few hundred lines.
MAX_BYTES = 512 * 1024

_BANNED_BUILTINS = {
    "eval": "eval runs code built from a string",
    "exec": "exec runs code built from a string",
    "compile": "compile builds code from a string",
    "open": "open reads and writes files, which this lab's files may not do (its allowed_imports "
            "grant no file access)",
    "__import__": "__import__ imports modules by computed name",
    "globals": "globals() exposes and rewrites module namespaces",
    "locals": "locals() exposes and rewrites namespaces",
    "vars": "vars() exposes and rewrites the namespace of any object",
    "breakpoint": "breakpoint() stops the grader waiting for a debugger",
    "input": "input() waits for a keyboard the grader does not have",
    "help": "help() starts an interactive pager",
    "exit": "exit() ends the process the tests run in",
    "quit": "quit() ends the process the tests run in",
    "__builtins__": "__builtins__ reaches and rewrites every built-in",
    "__loader__": "__loader__ reaches the import machinery",
    "__spec__": "__spec__ reaches the import machinery",
    "__file__": "__file__ ties your code to where it lives on disk (the tests give you paths)",
    "__cached__": "__cached__ reaches the bytecode cache",
    "__path__": "__path__ reaches the import machinery",
    "__package__": "__package__ reaches the import machinery",
    "__build_class__": "__build_class__ reaches the interpreter's internals",
    "__class__": "the bare name __class__ reaches the class object; use type(self).__name__ for messages",
}

#: Modules (and the like) that give a way out of the process or into the interpreter.
_ESCAPE_MODULES = {
    "sys", "os", "posix", "nt", "builtins", "subprocess", "ctypes", "importlib", "inspect", "gc",
    "pickle", "marshal", "shutil", "socket", "signal", "threading", "_thread", "multiprocessing",
    "pty", "runpy", "io", "codecs", "atexit", "weakref", "traceback", "operator", "types",
    "tempfile", "mmap", "asyncio", "concurrent", "pdb", "faulthandler", "tracemalloc",
    "zipimport", "pkgutil",
}

#: Attribute names refused on any object, with the reason.
_BANNED_ATTRS: dict[str, str] = {
    **{name: f"reaches the module {name}, a way out of your lab" for name in _ESCAPE_MODULES},
    "_exit": "ends the process the tests run in",
    "exit": "ends the process the tests run in",
    "abort": "ends the process the tests run in",
    "system": "runs a shell command",
    "popen": "runs a shell command",
    "fork": "starts processes",
    "forkpty": "starts processes",
    "posix_spawn": "starts processes",
    "posix_spawnp": "starts processes",
    "kill": "signals other processes",
    "killpg": "signals other processes",
    "setsid": "leaves the grader's process group",
    "setpgid": "leaves the grader's process group",
    "setpgrp": "leaves the grader's process group",
    "putenv": "changes the environment",
    "unsetenv": "changes the environment",
    "environ": "reads and changes the environment",
    "_getframe": "reaches the interpreter's frames",
    "settrace": "hooks the interpreter",
    "setprofile": "hooks the interpreter",
    "setrecursionlimit": "changes the interpreter's limits",
    "chmod": "changes file permissions",
    "lchmod": "changes file permissions",
    "fchmod": "changes file permissions",
    "chown": "changes file ownership",
    "utime": "rewrites file times",
    "symlink": "creates links to other files",
    "symlink_to": "creates links to other files",
    "hardlink_to": "creates links to other files",
    "link_to": "creates links to other files",
    "load_inline": "compiles and loads native code",
    "load_library": "loads native code",
    "cpp_extension": "compiles and loads native code",
    "hub": "downloads and runs code (torch.hub)",
    "library": "redefines torch operators for every caller (torch.library)",
    "Library": "redefines torch operators for every caller (torch.library)",
    "custom_op": "redefines torch operators for every caller",
    "overrides": "intercepts every torch function for every caller (torch.overrides)",
    "TorchFunctionMode": "intercepts every torch function for every caller",
    "TorchDispatchMode": "intercepts every torch operator for every caller",
    "package": "loads code from archives (torch.package)",
    "serialization": "reaches torch's pickle machinery",
    "add_safe_globals": "lets torch.load unpickle arbitrary objects",
    "safe_globals": "lets torch.load unpickle arbitrary objects",
    "distributed": "starts processes and opens network connections",
    "get_type_hints": "evaluates strings as code",
    "make_dataclass": "builds classes from strings",
    "attrgetter": "reaches attributes by computed name",
    "methodcaller": "calls methods by computed name",
    "set_default_dtype": "changes torch's default dtype for the tests too",
    "set_default_tensor_type": "changes torch's default tensor type for the tests too",
    "set_default_device": "changes torch's default device for the tests too",
    # frames, code objects, tracebacks, generators
    "f_globals": "reaches another frame's globals",
    "f_locals": "reaches another frame's variables",
    "f_builtins": "reaches the built-ins",
    "f_back": "walks up to the caller's frame (the test's)",
    "f_code": "reaches code objects",
    "f_trace": "hooks the interpreter",
    "tb_frame": "reaches the frames of a traceback",
    "tb_next": "walks a traceback's frames",
    "gi_frame": "reaches a generator's frame",
    "gi_code": "reaches a generator's code",
    "cr_frame": "reaches a coroutine's frame",
    "ag_frame": "reaches a generator's frame",
    "co_code": "reaches bytecode",
    "co_consts": "reaches bytecode",
    "func_globals": "reaches a function's globals",
    "mro": "walks the class hierarchy up to object and back down to every class",
}
_BANNED_PREFIXES = {
    "register_module_": "installs a hook on every module of the process, the tests' included",
    "exec": "runs another program",
    "spawn": "starts processes",
}

#: Dunder attributes a learner may read. Every other dunder is a walk into the interpreter.
_SAFE_DUNDERS = {
    "__init__", "__name__", "__qualname__", "__doc__", "__module__", "__repr__", "__str__",
    "__len__", "__iter__", "__next__", "__contains__", "__getitem__", "__setitem__", "__call__",
    "__enter__", "__exit__", "__hash__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
    "__ge__", "__add__", "__sub__", "__mul__", "__matmul__", "__truediv__", "__neg__",
    "__post_init__", "__annotations__", "__version__", "__all__", "__slots__",
}
_NAME_ATTRS = {"__name__", "__qualname__"}
#: Dunder names a module may use bare.
_SAFE_DUNDER_NAMES = {"__name__", "__doc__", "__all__", "__slots__", "__version__", "__annotations__", "__debug__"}

#: ``os`` is allowed to some labs for paths; only these of its names may be used.
_OS_SAFE = {
    "path", "fspath", "PathLike", "sep", "altsep", "linesep", "pathsep", "curdir", "pardir",
    "extsep", "makedirs", "getcwd", "fsencode", "fsdecode", "listdir", "scandir", "stat",
}

#: Modules that grant file access: a file whose labs allow one of them may also call open().
_FILE_MODULES = frozenset({"pathlib", "os", "io"})

#: Calls that may take a class (``nn.Linear``) as an argument.
_CLASS_ARG_CALLS = {"isinstance", "issubclass", "print", "repr", "str", "cast", "TypeVar", "NewType"}


@dataclass(frozen=True)
class Refusal:
    """Why the grader refuses a lab file: the line, the code, the reason and what to do."""

    file: str
    line: int
    code: str
    why: str

    def __str__(self) -> str:
        snippet = f" `{self.code}`" if self.code else ""
        return f"{self.file}, line {self.line}:{snippet} {self.why}"


@lru_cache(maxsize=512)
def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module, found on the import path without importing anything."""
    parts = dotted.split(".")
    try:
        spec = importlib.util.find_spec(parts[0]) if parts[0] else None
    except (ImportError, ValueError):
        return False
    for depth in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return dotted in {"os.path"}
        name = ".".join(parts[: depth + 1])
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
        except (ImportError, ValueError):
            return False
    return spec is not None


def _class_like(dotted: str) -> bool:
    last = dotted.rsplit(".", 1)[-1]
    return bool(last) and last[0].isupper() and not last.isupper()


def _dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _chain(node: ast.expr) -> tuple[ast.Name, list[str]] | None:
    """``a.b.c`` -> (Name a, ["b", "c"]); None when the chain does not start at a name."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node, attrs[::-1]
    return None


def _callee(call: ast.Call) -> str:
    """The name a call calls: ``isinstance`` in ``isinstance(...)``, ``cast`` in ``typing.cast(...)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _root_name(node: ast.expr) -> ast.Name | None:
    """The name an assignment target hangs from: ``a`` in ``a.b[0].c``; None for a call or literal."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node if isinstance(node, ast.Name) else None


class _Vetter(ast.NodeVisitor):
    def __init__(self, filename: str, lines: list[str], allowed: frozenset[str], package: str) -> None:
        self.filename = filename
        self.lines = lines
        self.allowed = allowed
        self.package = package
        self.refusals: list[Refusal] = []
        self.imported: dict[str, str] = {}  # local name -> dotted origin
        self.parents: dict[ast.AST, ast.AST] = {}
        self.annotation_nodes: set[ast.AST] = set()

    # -- helpers ---------------------------------------------------------------------------

    def refuse(self, node: ast.AST, why: str) -> None:
        line = getattr(node, "lineno", 0)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        if len(code) > 80:
            code = code[:77] + "..."
        self.refusals.append(Refusal(self.filename, line, code, why))

    def origin(self, chain: tuple[ast.Name, list[str]]) -> str | None:
        """The dotted path a chain rooted at an imported name stands for; None if not imported."""
        name, attrs = chain
        base = self.imported.get(name.id)
        if base is None:
            return None
        return ".".join([base, *attrs])

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def prepare(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            annotations: list[ast.expr | None] = []
            if isinstance(node, ast.arg):
                annotations.append(node.annotation)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                annotations.append(node.returns)
            elif isinstance(node, ast.AnnAssign):
                annotations.append(node.annotation)
            for annotation in annotations:
                if annotation is not None:
                    self.annotation_nodes.update(ast.walk(annotation))
        # every import binds its names for the whole file (flow-insensitive on purpose)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imported[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self.imported[top] = top
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = self.package if not node.module else f"{self.package}.{node.module}"
                else:
                    base = node.module or ""
                for alias in node.names:
                    if alias.name != "*":
                        self.imported[alias.asname or alias.name] = f"{base}.{alias.name}"

    # -- imports ---------------------------------------------------------------------------

    def check_module(self, node: ast.AST, dotted: str) -> None:
        top = dotted.split(".")[0]
        if top not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "nothing"
            self.refuse(
                node,
                f"imports {dotted}, which this lab does not allow (allowed: {allowed}); "
                "write it with what the lab allows",
            )
            return
        for part in dotted.split(".")[1:]:
            self.check_attr_name(node, part, dotted, foreign=True)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package if not node.module else f"{self.package}.{node.module}"
        else:
            base = node.module or ""
        self.check_module(node, base)
        for alias in node.names:
            if alias.name == "*":
                self.refuse(node, f"`from {base} import *` hides what you use: import the names you need")
            else:
                self.check_attr_name(node, alias.name, f"{base}.{alias.name}", foreign=True)
                if base == "os" and alias.name not in _OS_SAFE:
                    self.refuse(node, f"`from os import {alias.name}`: of os, a lab file may use only os.path and the like")
        self.generic_visit(node)

    # -- names and attributes ----------------------------------------------------------------

    def check_attr_name(self, node: ast.AST, attr: str, shown: str, *, foreign: bool) -> None:
        if _dunder(attr):
            if attr not in _SAFE_DUNDERS and attr != "__class__":
                self.refuse(node, f"`{shown}`: the dunder attribute {attr} walks into the interpreter's internals")
            return
        why = _BANNED_ATTRS.get(attr)
        if why is None:
            for prefix, reason in _BANNED_PREFIXES.items():
                if attr.startswith(prefix):
                    why = reason
        if why:
            self.refuse(node, f"`{shown}` {why}; the grader refuses it")
        elif foreign and attr.startswith("_"):
            self.refuse(
                node,
                f"`{shown}` uses a private name of another module: use its public API",
            )

    def visit_Name(self, node: ast.Name) -> None:
        why = _BANNED_BUILTINS.get(node.id)
        if node.id == "open" and self.allowed & _FILE_MODULES:
            why = None  # the file's labs may read and write files anyway (pathlib, os)
        if why and node.id not in self.imported:
            self.refuse(node, f"{why}; the grader refuses it")
        elif _dunder(node.id) and node.id not in _SAFE_DUNDER_NAMES and node.id not in _BANNED_BUILTINS:
            self.refuse(node, f"the name {node.id} reaches the interpreter's internals; the grader refuses it")
        elif node.id == "getattr":
            self.check_getattr(node)
        elif node.id in ("setattr", "delattr"):
            self.check_setattr(node)
        elif node.id == "type":
            self.check_type(node)
        self.check_foreign_value(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        origin = self.origin(chain) if chain else None
        foreign = origin is not None
        shown = origin if origin is not None else ast.unparse(node)
        if chain is not None and self.imported.get(chain[0].id) == "os" and chain[1]:
            if chain[1][0] not in _OS_SAFE:
                self.refuse(node, f"`os.{chain[1][0]}`: of os, a lab file may use only os.path and the like")
        if node.attr == "__class__":
            above = self.parent(node)
            ok = (isinstance(above, ast.Attribute) and above.attr in _NAME_ATTRS) or isinstance(above, ast.Compare)
            if not ok:
                self.refuse(
                    node,
                    f"`{shown}` reaches the class object (and from it every class): "
                    "only `.__class__.__name__` is allowed, for messages",
                )
        else:
            self.check_attr_name(node, node.attr, shown, foreign=foreign)
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.check_target(node)
        self.check_foreign_value(node)
        self.generic_visit(node)

    def check_foreign_value(self, node: ast.Name | ast.Attribute) -> None:
        """A module, or a class of another module, may not be passed around as a value."""
        above = self.parent(node)
        if isinstance(above, ast.Attribute) and above.value is node:
            return  # not the whole chain: the outer attribute is checked instead
        if not isinstance(node.ctx, ast.Load):
            return
        chain = _chain(node)
        origin = self.origin(chain) if chain else None
        if origin is None:
            return
        if is_module(origin):
            self.refuse(
                node,
                f"uses the module {origin} as a value: a module may only be used as "
                f"`{ast.unparse(node)}.name`, so that no code can rebind its functions",
            )
        elif _class_like(origin) and not self.class_context_ok(node):
            self.refuse(
                node,
                f"uses the class {origin} as a value: you may instantiate it, subclass it, compare "
                "with it and name it in isinstance() or annotations, but not store or pass it, "
                "since code that receives it could rebind its methods for every test",
            )

    def class_context_ok(self, node: ast.AST) -> bool:
        if node in self.annotation_nodes:
            return True
        child: ast.AST = node
        above = self.parent(node)
        while isinstance(above, (ast.Tuple, ast.List)) or (
            isinstance(above, ast.BinOp) and isinstance(above.op, ast.BitOr)
        ):
            child, above = above, self.parent(above)
        if above is None:
            return False
        if isinstance(above, ast.Call):
            if above.func is child:
                return True
            return _callee(above) in _CLASS_ARG_CALLS
        if isinstance(above, ast.keyword):
            owner = self.parent(above)
            if isinstance(owner, ast.ClassDef):
                return True
            return isinstance(owner, ast.Call) and _callee(owner) in _CLASS_ARG_CALLS
        if isinstance(above, ast.ClassDef):
            return child in above.bases
        if isinstance(above, (ast.Compare, ast.ExceptHandler, ast.MatchClass, ast.FormattedValue, ast.Raise)):
            return True
        if isinstance(above, ast.Subscript):
            return above.slice is child or child is above.value
        return False

    # -- calls that reach by name --------------------------------------------------------------

    def call_of(self, node: ast.Name) -> ast.Call | None:
        above = self.parent(node)
        return above if isinstance(above, ast.Call) and above.func is node else None

    def check_getattr(self, node: ast.Name) -> None:
        call = self.call_of(node)
        if call is None:
            self.refuse(node, "getattr used as a value can reach any attribute by computed name")
            return
        if len(call.args) < 2:
            return
        name = call.args[1]
        strings = self.possible_strings(name)
        if strings is None:
            self.refuse(
                call,
                "getattr with a computed attribute name can reach anything, the interpreter's "
                "internals included: write obj.name, loop over a literal tuple of names, or "
                "use model.get_submodule(dotted_name)",
            )
            return
        for text in strings:
            if _dunder(text) and text not in _SAFE_DUNDERS:
                self.refuse(call, f"getattr(..., {text!r}) walks into the interpreter's internals")
            else:
                self.check_attr_name(call, text, f"getattr(..., {text!r})", foreign=False)

    def check_setattr(self, node: ast.Name) -> None:
        call = self.call_of(node)
        if call is None:
            self.refuse(node, f"{node.id} used as a value can change any object by computed name")
            return
        if not call.args:
            return
        target = call.args[0]
        chain = _chain(target)
        if chain is not None and self.origin(chain) is not None:
            self.refuse(
                call,
                f"{node.id} on {self.origin(chain)} changes another module for every test: "
                "set attributes on your own objects only",
            )
        if len(call.args) >= 2:
            strings = self.possible_strings(call.args[1])
            for text in strings or ():
                if _dunder(text):
                    self.refuse(call, f"{node.id}(..., {text!r}) rewrites the interpreter's internals")

    def check_type(self, node: ast.Name) -> None:
        call = self.call_of(node)
        if call is None:
            return  # `type` in annotations or isinstance(x, type)
        if len(call.args) != 1 or call.keywords:
            self.refuse(call, "type() with three arguments builds classes dynamically; write a class statement")
            return
        above = self.parent(call)
        if isinstance(above, ast.Attribute) and above.attr in _NAME_ATTRS:
            return
        if isinstance(above, (ast.Compare, ast.FormattedValue)):
            return
        if isinstance(above, ast.Call) and _callee(above) in _CLASS_ARG_CALLS:
            return
        self.refuse(
            call,
            "type(x) may be compared (type(x) is nn.Linear) or named (type(x).__name__), "
            "not kept or passed on: the class it returns could be rebound for every test",
        )

    def possible_strings(self, node: ast.expr) -> list[str] | None:
        """Every string ``node`` can hold, when the file shows them; None when it is computed."""
        if isinstance(node, ast.Constant):
            return [node.value] if isinstance(node.value, str) else None
        if not isinstance(node, ast.Name):
            return None
        scope: ast.AST | None = node
        while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module, ast.Lambda)):
            scope = self.parent(scope)
        if scope is None:
            return None
        found: list[str] = []
        bindings = 0
        for other in ast.walk(scope):
            if isinstance(other, ast.Name) and other.id == node.id and isinstance(other.ctx, ast.Store):
                bindings += 1
                values = self.binding_strings(other)
                if values is None:
                    return None
                found.extend(values)
            elif isinstance(other, ast.arg) and other.arg == node.id:
                return None
        return found if bindings else None

    def binding_strings(self, target: ast.Name) -> list[str] | None:
        """The strings a name is bound to at one binding: an assignment or a for-loop target."""
        path: list[int] = []
        child: ast.AST = target
        above = self.parent(target)
        while isinstance(above, ast.Tuple):
            path.append(above.elts.index(child))  # type: ignore[arg-type]
            child, above = above, self.parent(above)
        if isinstance(above, ast.Assign) and not path:
            return self.literal_strings(above.value, [])
        if isinstance(above, ast.For) and above.target is child:
            iterable = above.iter
            if isinstance(iterable, ast.Name):
                resolved = self.module_constant(iterable.id)
                if resolved is None:
                    return None
                iterable = resolved
            if not isinstance(iterable, (ast.Tuple, ast.List, ast.Set)):
                return None
            out: list[str] = []
            for element in iterable.elts:
                values = self.literal_strings(element, path[::-1])
                if values is None:
                    return None
                out.extend(values)
            return out
        return None

    def literal_strings(self, node: ast.expr, path: list[int]) -> list[str] | None:
        for index in path:
            if not isinstance(node, ast.Tuple) or index >= len(node.elts):
                return None
            node = node.elts[index]
        if isinstance(node, ast.Constant):
            return [node.value] if isinstance(node.value, str) else []
        return None

    def module_constant(self, name: str) -> ast.expr | None:
        module = next((n for n in self.parents.values() if isinstance(n, ast.Module)), None)
        if module is None:
            return None
        values = [
            stmt.value for stmt in module.body
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
        ]
        return values[0] if len(values) == 1 else None

    # -- changing other modules ------------------------------------------------------------------

    def check_target(self, node: ast.Attribute | ast.Subscript) -> None:
        root = _root_name(node)
        what = "deletes" if isinstance(node.ctx, ast.Del) else "assigns"
        if isinstance(node, ast.Attribute) and _dunder(node.attr):
            self.refuse(node, f"{what} the dunder attribute {node.attr}, which rewires how objects behave")
        if root is not None and root.id in self.imported:
            self.refuse(
                node,
                f"{what} `{ast.unparse(node)}`, a part of another module ({self.imported[root.id]}): "
                "the tests use it too. Change your own objects only",
            )
        elif root is not None and root.id in {*_BANNED_BUILTINS, "type", "object", "super"}:
            self.refuse(node, f"{what} an attribute of the built-in {root.id}")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.check_target(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg == "pickle_module":
                self.refuse(node, "pickle_module= loads or saves arbitrary Python objects")
            if keyword.arg == "weights_only" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is True
            ):
                self.refuse(node, "torch.load without weights_only=True runs code hidden in the file")
        func = node.func
        chain = _chain(func) if isinstance(func, ast.Attribute) else None
        origin = self.origin(chain) if chain else None
        if origin is not None and origin.endswith(".load") and len(node.args) > 2:
            self.refuse(node, "pass only the file and map_location to load: a third argument is a pickle module")
        self.generic_visit(node)


def vet_source(source: bytes, filename: str, allowed: Iterable[str], package: str) -> list[Refusal]:
    """Why ``source`` (a lab file's bytes) must not run; empty when it may.

    A file that does not parse is not refused: nothing of it can run, and the tests report the
    syntax error to the learner like any other mistake.
    """
    if len(source) > MAX_BYTES:
        return [Refusal(filename, 0, "", f"is {len(source)} bytes; a lab file is at most {MAX_BYTES}")]
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError):
        return []
    except (RecursionError, MemoryError):
        return [Refusal(filename, 0, "", "is nested too deeply to check; simplify it")]
    text = source.decode("utf-8", errors="replace")
    vetter = _Vetter(filename, text.splitlines(), frozenset(allowed), package)
    try:
        vetter.prepare(tree)
        vetter.visit(tree)
    except RecursionError:
        return [Refusal(filename, 0, "", "is nested too deeply to check; simplify it")]
    seen: set[tuple[int, str]] = set()
    unique: list[Refusal] = []
    for refusal in sorted(vetter.refusals, key=lambda r: r.line):
        if (refusal.line, refusal.why) not in seen:
            seen.add((refusal.line, refusal.why))
            unique.append(refusal)
    return unique


def vet_file(path: Path, allowed: Iterable[str], package: str) -> list[Refusal]:
    return vet_source(path.read_bytes(), path.name, allowed, package)


def iter_problems(refusals: Iterable[Refusal]) -> Iterator[str]:
    for refusal in refusals:
        yield str(refusal)
