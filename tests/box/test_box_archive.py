"""The llama.cpp scripts and documents, moved into the archive folder."""

from __future__ import annotations

from bestbox.render import render_template


def test_llamacpp_file_is_in_archive(host, archive_pair):
    source, destination = archive_pair
    assert host.file(destination).is_file, (
        f"{destination} is missing; if {source} is missing too, the checkout never had it "
        "and the deploy only warned")


def test_llamacpp_file_left_original_path(host, archive_pair):
    source, _ = archive_pair
    assert not host.file(source).exists, f"{source} is still in place"


def test_archive_readme_matches_template(host, settings):
    readme = host.file(settings.path(f"{settings.bestbox_archive_dir}/README.md"))
    expected = render_template("archive-README.md.j2", settings,
                               archive_scripts=settings.bestbox_archive_scripts,
                               archive_docs=settings.bestbox_archive_docs)
    assert readme.is_file, f"{readme.path} is missing"
    assert readme.content_string == expected
