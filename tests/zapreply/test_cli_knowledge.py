"""`zapreply knowledge …` and `zapreply faq …`: the admin API's knowledge use cases from the
command line, with its refusals as exit codes (2 a bad document or value, 1 not found)."""

from __future__ import annotations

import io
import json

from tests.documents import DELIVERY, RETURNS, pdf_with_text
from tests.factories import make_config
from zapreply import cli


def output(capsys) -> object:  # type: ignore[no-untyped-def]
    return json.loads(capsys.readouterr().out)


def test_documents_are_added_from_files_or_text_listed_replaced_and_deleted(
    db, wuzapi, capsys, tmp_path, monkeypatch
):
    config_id = str(make_config(wuzapi))
    pdf = tmp_path / "precos.pdf"
    pdf.write_bytes(pdf_with_text("Camiseta: R$ 49,90"))

    assert cli.main(["knowledge", "add", config_id, str(pdf), "--title", "Preços"]) == 0
    added = output(capsys)
    assert (added["title"], added["kind"], added["passages"]) == ("Preços", "pdf", 1)
    assert cli.main(["knowledge", "add", config_id, "--title", "Entregas",
                     "--content", DELIVERY]) == 0
    delivery = output(capsys)["id"]
    monkeypatch.setattr("sys.stdin", io.StringIO(RETURNS))
    assert cli.main(["knowledge", "replace", config_id, str(delivery), "--title", "Trocas",
                     "--content-stdin"]) == 0
    assert output(capsys)["title"] == "Trocas"

    assert cli.main(["knowledge", "list", config_id]) == 0
    assert [d["title"] for d in output(capsys)] == ["Preços", "Trocas"]
    assert cli.main(["knowledge", "show", config_id, str(delivery)]) == 0
    assert output(capsys)["content"] == RETURNS
    assert cli.main(["knowledge", "delete", config_id, str(delivery)]) == 0
    capsys.readouterr()
    assert cli.main(["knowledge", "show", config_id, str(delivery)]) == 1
    assert f"document {delivery} not found" in capsys.readouterr().err


def test_a_bad_document_exits_2_with_its_reason(db, wuzapi, capsys, tmp_path):
    config_id = str(make_config(wuzapi))
    image = tmp_path / "foto.png"
    image.write_bytes(b"\x89PNG\r\n")
    empty = tmp_path / "vazio.txt"
    empty.write_text(" ")
    for argv, reason in [
        ([str(image)], "unsupported document type '.png'"),
        ([str(empty)], "document is empty"),
        ([str(tmp_path / "nao-existe.txt")], "cannot read"),
        (["--title", "T"], "give a FILE, or --title with --content"),
        (["--content", "texto"], "'title' must be a non-empty string"),
    ]:
        assert cli.main(["knowledge", "add", config_id, *argv]) == 2, argv
        assert reason in capsys.readouterr().err
    assert cli.main(["knowledge", "list", config_id]) == 0
    assert output(capsys) == []
    assert cli.main(["knowledge", "list", "999"]) == 1


def test_faq_entries_are_managed_from_the_cli(db, wuzapi, capsys):
    config_id = str(make_config(wuzapi))
    assert cli.main(["faq", "add", config_id, "--question", "Abrem domingo?",
                     "--answer", "Não."]) == 0
    entry = output(capsys)["id"]
    assert cli.main(["faq", "replace", config_id, str(entry), "--question", "Abrem domingo?",
                     "--answer", "Só em dezembro."]) == 0
    capsys.readouterr()
    assert cli.main(["faq", "list", config_id]) == 0
    assert [e["answer"] for e in output(capsys)] == ["Só em dezembro."]
    assert cli.main(["faq", "add", config_id, "--question", " ", "--answer", "x"]) == 2
    assert "'question' must be a non-empty string" in capsys.readouterr().err
    assert cli.main(["faq", "delete", config_id, str(entry)]) == 0
    assert cli.main(["faq", "delete", config_id, str(entry)]) == 1
