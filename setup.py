"""Ships the editable content inside the wheel, so an installed breachbook needs no checkout.

playbooks/, templates/, rules/ and flows/ stay at the top of the repository, where an
organisation edits them; building copies them into the package as breachbook/content/. An
editable install skips the copy: it reads the checkout's folders directly.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CONTENT_FOLDERS = ("playbooks", "templates", "rules", "flows", "scenarios")


def content_files() -> list[Path]:
    return [
        path
        for folder in CONTENT_FOLDERS
        for path in sorted((HERE / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]


class BuildWithContent(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source in content_files():
            target = Path(self.build_lib, "breachbook", "content", source.relative_to(HERE))
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        content = Path(self.build_lib, "breachbook", "content")
        return outputs + [str(content / p.relative_to(HERE)) for p in content_files()]


setup(cmdclass={"build_py": BuildWithContent})
