"""What `buildhub build` uploads from a directory, and what it refuses before uploading."""

import io
import os
import tarfile

import pytest

from buildhub_cli import packing
from buildhub_cli.packing import PackingRefused, pack_to_bytes, select_files


def tree(root, files: dict[str, str]):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def selected(root, **caps) -> list[str]:
    return select_files(root, **caps).files


def test_gitignore_rules_with_negation_directories_anchors_and_nesting(tmp_path):
    tree(
        tmp_path,
        {
            ".gitignore": "# deps\nnode_modules/\n*.log\n!keep.log\n/build\nsecret?.txt\n"
            "docs/**/*.tmp\nout/\n",
            "index.js": "",
            "app.log": "",
            "keep.log": "",
            "node_modules/x/index.js": "",
            "build/a.js": "",
            "src/build/b.js": "",  # /build is anchored to the root
            "src/node_modules/y.js": "",  # node_modules/ matches at any depth
            "src/.gitignore": "generated.js\n!important.log\n",
            "src/generated.js": "",
            "src/important.log": "",
            "src/other.log": "",
            "secret1.txt": "",
            "secret10.txt": "",
            "docs/a/b/c.tmp": "",
            "docs/a/readme.md": "",
            "out": "a file named like an ignored directory",
            ".git/HEAD": "ref: refs/heads/main",
        },
    )

    assert selected(tmp_path) == [
        ".gitignore",
        "docs/a/readme.md",
        "index.js",
        "keep.log",
        "out",
        "secret10.txt",
        "src/.gitignore",
        "src/build/b.js",
        "src/important.log",
    ]


def test_a_file_in_an_ignored_directory_cannot_be_reincluded(tmp_path):
    tree(tmp_path, {".gitignore": "dist/\n!dist/keep.js\n", "dist/keep.js": "", "a.js": ""})

    assert selected(tmp_path) == [".gitignore", "a.js"]


def test_git_info_exclude_is_honoured(tmp_path):
    tree(tmp_path, {".git/info/exclude": "local.env\n", "local.env": "", "a.js": ""})

    assert selected(tmp_path) == ["a.js"]


def test_the_archive_keeps_links_inside_the_tree_and_normalises_modes(tmp_path):
    tree(tmp_path, {"src/a.js": "a", "run.sh": "#!/bin/sh"})
    (tmp_path / "run.sh").chmod(0o775)
    (tmp_path / "src" / "alias.js").symlink_to("a.js")

    with tarfile.open(fileobj=io.BytesIO(pack_to_bytes(tmp_path)), mode="r:gz") as archive:
        members = {member.name: member for member in archive.getmembers()}

    assert set(members) == {"run.sh", "src/a.js", "src/alias.js"}
    assert members["run.sh"].mode == 0o755 and members["src/a.js"].mode == 0o644
    assert members["src/alias.js"].issym() and members["src/alias.js"].linkname == "a.js"
    assert {members[name].uid for name in members} == {0}


@pytest.mark.parametrize(
    ("link", "reason"),
    [("/etc/passwd", "absolute path"), ("../../outside", "outside the source tree")],
)
def test_links_leaving_the_tree_are_refused(tmp_path, link, reason):
    tree(tmp_path, {"src/a.js": ""})
    (tmp_path / "src" / "escape").symlink_to(link)

    with pytest.raises(PackingRefused, match=reason) as refused:
        select_files(tmp_path)
    assert "src/escape" in str(refused.value)


def test_an_ignored_bad_link_is_not_refused(tmp_path):
    tree(tmp_path, {".gitignore": "escape\n", "a.js": ""})
    (tmp_path / "escape").symlink_to("/etc")

    assert selected(tmp_path) == [".gitignore", "a.js"]


def test_fifos_are_refused(tmp_path):
    tree(tmp_path, {"a.js": ""})
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(PackingRefused, match="pipe: a fifo"):
        select_files(tmp_path)


def test_too_many_files_too_many_bytes_and_long_names_are_refused(tmp_path):
    tree(tmp_path, {f"f{n}.js": "x" * 10 for n in range(5)})

    with pytest.raises(PackingRefused, match="more than 4 files"):
        select_files(tmp_path, max_files=4)
    with pytest.raises(PackingRefused, match="MB unpacked"):
        select_files(tmp_path, max_bytes=45)
    (tmp_path / ("n" * 200)).mkdir()
    (tmp_path / ("n" * 200) / ("m" * 200)).mkdir()
    (tmp_path / ("n" * 200) / ("m" * 200) / ("o" * 250)).mkdir()
    (tmp_path / ("n" * 200) / ("m" * 200) / ("o" * 250) / ("p" * 250)).mkdir()
    (tmp_path / ("n" * 200) / ("m" * 200) / ("o" * 250) / ("p" * 250) / ("q" * 200)).write_text("")
    with pytest.raises(PackingRefused, match="too long"):
        select_files(tmp_path)


def test_an_empty_or_wholly_ignored_source_is_refused(tmp_path):
    tree(tmp_path, {".gitignore": "*\n"})

    with pytest.raises(PackingRefused, match="nothing to upload"):
        select_files(tmp_path)


def test_the_server_accepts_what_packing_makes(tmp_path):
    """The archive passes the server's own walk (publishing/archives.py)."""
    from publishing.archives import TAR_GZ, Caps, unpack

    tree(tmp_path, {"src/a.js": "a", "package.json": "{}"})
    (tmp_path / "src" / "alias.js").symlink_to("a.js")
    caps = Caps(packing.MAX_UNPACKED_BYTES, packing.MAX_FILES)

    summary = unpack(io.BytesIO(pack_to_bytes(tmp_path)), TAR_GZ, None, caps)

    assert summary["files"] >= 2
