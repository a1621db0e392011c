"""Reading what an admin uploads into a knowledge document: each kind's text, and a clear
refusal (Invalid, so 400 or exit code 2) for what cannot be used."""

from __future__ import annotations

import pytest

from tests.documents import pdf_with_text
from zapreply.actions import documents
from zapreply.actions.errors import Invalid


def test_a_text_document_keeps_its_text_and_title():
    document = documents.from_text("  Entregas  ", "Entregamos em dois dias.\r\n")
    assert (document.title, document.kind, document.text) == (
        "Entregas", "text", "Entregamos em dois dias.")


def test_a_markdown_file_is_read_as_text_with_the_file_name_as_title():
    document = documents.from_upload("# Trocas\n\nAté 7 dias.".encode(), filename="trocas.md",
                                     mimetype=None)
    assert (document.title, document.kind, document.filename) == ("trocas.md", "markdown",
                                                                  "trocas.md")
    assert document.text == "# Trocas\n\nAté 7 dias."


def test_a_pdf_gives_the_text_of_its_pages():
    data = pdf_with_text("Tabela de precos", "Camiseta: R$ 49,90")
    document = documents.from_upload(data, filename="precos.pdf", mimetype="application/pdf",
                                     title="Preços")
    assert document.kind == "pdf" and document.title == "Preços"
    assert "Tabela de precos" in document.text and "Camiseta: R$ 49,90" in document.text


def test_a_csv_product_list_becomes_one_line_per_product_with_its_columns():
    data = "produto;preço;estoque\nCamiseta;49,90;12\nBoné;29,90;0\n".encode()
    document = documents.from_upload(data, filename="produtos.csv", mimetype="text/csv")
    assert document.text.splitlines() == ["produto: Camiseta; preço: 49,90; estoque: 12",
                                          "produto: Boné; preço: 29,90; estoque: 0"]


def test_html_gives_its_visible_text_without_scripts_or_styles():
    data = (b"<html><head><title>x</title><style>p{color:red}</style></head><body>"
            b"<h1>Entregas</h1><p>Em at&eacute; 2 dias.</p><script>alert(1)</script></body>"
            b"</html>")
    document = documents.from_upload(data, filename="entregas.html", mimetype="text/html")
    assert document.text == "Entregas\n\nEm até 2 dias."


def test_a_windows_1252_text_file_is_read_too():
    document = documents.from_upload("Promoção".encode("cp1252"), filename="p.txt",
                                     mimetype=None)
    assert document.text == "Promoção"


@pytest.mark.parametrize("data, filename, mimetype, reason", [
    (b"   \n ", "vazio.txt", None, "document is empty"),
    (b"", "vazio.md", None, "document is empty"),
    (b"%PDF-1.4\n garbage that is no pdf", "ruim.pdf", None, "unreadable PDF"),
    (b"GIF89a....", "ruim.pdf", None, "unreadable PDF: not a PDF file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "foto.png", "image/png", "unsupported document type '.png'"),
    (b"PK\x03\x04", "planilha.xlsx", None, "unsupported document type '.xlsx'"),
    (b"abc", None, "application/octet-stream", "unsupported document type"),
    (b"abc\x00def", "binario.txt", None, "not text"),
    (b"x" * (documents.MAX_UPLOAD_BYTES + 1), "grande.txt", None, "document too large"),
])
def test_an_unusable_upload_is_refused_with_its_reason(data, filename, mimetype, reason):
    with pytest.raises(Invalid) as refused:
        documents.from_upload(data, filename=filename, mimetype=mimetype)
    assert reason in refused.value.message


def test_a_pdf_without_text_is_refused_as_needing_ocr():
    with pytest.raises(Invalid, match="no text in it"):
        documents.from_upload(pdf_with_text(), filename="scan.pdf", mimetype=None)


@pytest.mark.parametrize("title, content, reason", [
    ("", "texto", "'title' must be a non-empty string"),
    (None, "texto", "'title' must be a non-empty string"),
    ("x" * 201, "texto", "'title' must be at most 200 characters"),
    ("T", 42, "'content' must be a string"),
    ("T", "  ", "document is empty"),
    ("T", "x" * (documents.MAX_TEXT_CHARS + 1), "document too large"),
])
def test_a_bad_json_document_is_refused_with_its_reason(title, content, reason):
    with pytest.raises(Invalid) as refused:
        documents.from_text(title, content)
    assert reason in refused.value.message


def test_passages_pack_paragraphs_up_to_their_size_and_cut_longer_ones():
    text = "Primeiro parágrafo.\n\nSegundo.\n\n" + ("palavra " * 400).strip()
    passages = documents.split_passages(text, size=200)
    assert passages[0] == "Primeiro parágrafo.\n\nSegundo."
    assert all(len(p) <= 200 for p in passages)
    assert " ".join(passages[1:]).split() == ["palavra"] * 400
