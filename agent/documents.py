"""What the model is told of the user's files, and documents read into the conversation as text.

The user's turn begins with it, as in GLM-4 All Tools: with the python tool, a list of the files in
``/mnt/data``; without it (document mode), each document's text. Then ``N files uploaded.`` and the task.

Used when no tool takes the user's files (the python tool is off), and for formats code cannot open
easily (PDF, Word, PowerPoint) even when it is on. Each format is read by a well-kept library:
pypdf, python-docx, python-pptx, openpyxl; HTML through markdownify. Text is cut to the policy's
``[files] max_document_chars`` with a note of what was cut.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .confined import ConfinedError, run_confined
from .files import InputFile, listing

# The block GLM-4's composite demo puts before the user's question for each document.
FILE_TEMPLATE = "[File Name]\n{name}\n[File Content]\n{content}"
HARD_FOR_CODE = {".pdf", ".docx", ".pptx"}  # read as text even when the python tool has the file
MAX_PDF_PAGES = 300
DOCUMENT_DEADLINE_S = 60.0  # one document, read in a child process
DOCUMENT_MEMORY_MB = 2048


def describe_files(files: list[InputFile], seen_as: list[str] | None, limit: int) -> str:
    """The note before the user's task: where a tool's code sees the files (``seen_as``), or their text.

    Formats code cannot open easily (PDF, Word, PowerPoint) are read as text in both cases.
    """
    documents = files if seen_as is None else [f for f in files if Path(f.name).suffix.lower() in HARD_FOR_CODE]
    blocks = [f"[Files]\n{listing(files, seen_as)}"] if seen_as is not None else []
    if documents:
        blocks.append(read_documents(documents, limit))
    count = f"{len(files)} file{'s' if len(files) != 1 else ''} uploaded."
    return "\n\n".join(blocks) + f"\n\n\n{count}"


def read_documents(files: list[InputFile], limit: int) -> str:
    """The blocks of every file, one after another (binary files are named, not read)."""
    texts = read_texts([file.source for file in files], limit)
    return "\n\n".join(FILE_TEMPLATE.format(name=file.name, content=text) for file, text in zip(files, texts))


def read_document(path: Path, limit: int) -> str:
    """A document's text, cut to ``limit`` characters with a note; never raises (see :func:`read_texts`)."""
    return read_texts([path], limit)[0]


def read_texts(paths: list[Path], limit: int) -> list[str]:
    """Each document's text, cut to ``limit`` characters with a note; never raises.

    They are read in a child process with a deadline and memory and CPU limits (:mod:`agent.confined`):
    a crafted PDF or a zip bomb costs at most that, and stops when the limit does. One child reads
    them all (its start and imports cost most of a small document's time); if it fails, each is read
    in a child of its own, so one hostile file does not take the others with it. Readers stop soon
    after ``limit`` characters, so a long document is not read to its end only to be cut.
    """
    texts: list[str] | None = None
    if len(paths) > 1:  # a child that ran out of time or memory takes the batch: then one child each
        with contextlib.suppress(ConfinedError):
            texts = _confined_read(paths, limit, DOCUMENT_DEADLINE_S * 2)
    if texts is None:
        texts = []
        for path in paths:
            try:
                texts += _confined_read([path], limit, DOCUMENT_DEADLINE_S)
            except ConfinedError as exc:  # over a limit or hostile: say so, the conversation goes on
                texts.append(_unreadable(str(exc)))
    return [f"{text[:limit]}\n[… the rest of this document was cut ([files] max_document_chars = {limit})]"
            if len(text) > limit else text for text in texts]


def _unreadable(reason: str) -> str:
    return f"(this file could not be read as a document: {reason})"


def _confined_read(paths: list[Path], limit: int, timeout_s: float) -> list[str]:
    payload = json.dumps({"paths": [str(path) for path in paths], "limit": limit}).encode()
    return run_confined("agent.documents:read_in_child", payload, timeout_s=timeout_s, memory_mb=DOCUMENT_MEMORY_MB)


def pdf_text(data: bytes, max_pages: int = MAX_PDF_PAGES, limit: int | None = None) -> dict:
    """The text of each page (up to ``max_pages``, or until ``limit`` characters), the PDF's title and
    its page count. Run it confined."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        return {"encrypted": True, "pages": [], "title": "", "count": 0}
    pages, size = [], 0
    for page in reader.pages[:max_pages]:
        pages.append(page.extract_text() or "")
        size += len(pages[-1])
        if limit is not None and size > limit:
            break
    title = str((reader.metadata.title if reader.metadata else None) or "")
    return {"encrypted": False, "pages": pages, "title": title, "count": len(reader.pages)}


def read_pdf(data: bytes, *, timeout_s: float = DOCUMENT_DEADLINE_S) -> dict:
    """:func:`pdf_text` in a confined child process; raises :class:`ConfinedError` with the reason."""
    return run_confined("agent.documents:pdf_text", data, timeout_s=timeout_s, memory_mb=DOCUMENT_MEMORY_MB)


def read_in_child(payload: bytes) -> list[str]:
    """In the confined child: each document's text by its format's reader, a little past ``limit`` at most."""
    request = json.loads(payload)
    texts = []
    for path in request["paths"]:
        try:
            texts.append(read_unconfined(Path(path), request["limit"]))
        except Exception as exc:  # a damaged or encrypted file: noted, the others are still read here
            texts.append(_unreadable(f"{type(exc).__name__}: {exc}"))
    return texts


def read_unconfined(path: Path, limit: int) -> str:
    """One document's text, in this process: only for input you trust, or inside the confined child."""
    return _READERS.get(path.suffix.lower(), _read_text)(path, limit)


def _read_text(path: Path, limit: int) -> str:
    with open(path, "rb") as file:  # a character is at most 4 bytes of UTF-8
        data = file.read(min(4 * limit + 4, os.fstat(file.fileno()).st_size))
    if b"\0" in data[:8192]:  # text in any 8-bit encoding has no NUL bytes
        return f"(a binary file of {path.stat().st_size} bytes: not shown as text)"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 4:  # only the cut at the end split a character
            return data[:exc.start].decode("utf-8")
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1 << 20]).best()  # Shift-JIS, GBK, Latin-1...: detected, not assumed
    if best is None:
        return f"(a binary file of {path.stat().st_size} bytes: not shown as text)"
    return data.decode(best.encoding, errors="replace")


def _until(blocks: Iterable[str], limit: int, separator: str = "\n\n") -> str:
    """Join ``blocks`` until they pass ``limit`` characters; the rest is never produced."""
    taken, size = [], 0
    for block in blocks:
        taken.append(block)
        size += len(block) + len(separator)
        if size > limit:
            break
    return separator.join(taken)


def _read_pdf(path: Path, limit: int) -> str:
    pdf = pdf_text(path.read_bytes(), limit=limit)
    if pdf["encrypted"]:
        raise ValueError("the PDF is encrypted; it cannot be read without its password")
    text = "\n\n".join(f"--- page {i} ---\n{page}".rstrip() for i, page in enumerate(pdf["pages"], 1))
    if pdf["count"] > len(pdf["pages"]):
        text += f"\n\n[only the first {len(pdf['pages'])} of {pdf['count']} pages were read]"
    return text


def _read_docx(path: Path, limit: int) -> str:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    names = {style.style_id: style.name or "" for style in document.styles}  # once: a lookup per paragraph is slow

    def blocks() -> Iterator[str]:
        for block in document.iter_inner_content():  # paragraphs and tables in document order
            if isinstance(block, Paragraph):
                style = names.get(block._p.style or "", "")
                level = style.removeprefix("Heading ").strip()
                prefix = "#" * int(level) + " " if style.startswith("Heading ") and level.isdigit() else ""
                if block.text.strip():
                    yield prefix + block.text
            elif isinstance(block, Table):
                yield _markdown_table([[cell.text for cell in row.cells] for row in block.rows])

    return _until(blocks(), limit)


def _read_pptx(path: Path, limit: int) -> str:
    from pptx import Presentation

    def slides() -> Iterator[str]:
        for number, slide in enumerate(Presentation(str(path)).slides, 1):
            parts = [f"--- slide {number} ---", *_shape_texts(slide.shapes)]
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame.text.strip():
                parts.append("Notes: " + slide.notes_slide.notes_text_frame.text)
            yield "\n".join(parts)

    return _until(slides(), limit)


def _shape_texts(shapes: Any) -> list[str]:
    """Text of each shape in reading order: text frames, tables, charts, pictures' alt text, groups."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    parts = []
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            parts += _shape_texts(shape.shapes)
        elif shape.has_text_frame and shape.text_frame.text.strip():
            parts.append(shape.text_frame.text)
        elif getattr(shape, "has_table", False):
            parts.append(_markdown_table([[cell.text for cell in row.cells] for row in shape.table.rows]))
        elif getattr(shape, "has_chart", False):
            parts.append(_chart_text(shape.chart))
        elif shape.shape_type == MSO_SHAPE_TYPE.PICTURE:
            description = shape._element._nvXxPr.cNvPr.get("descr") or shape.name
            parts.append(f"![{description}]({shape.image.filename or shape.name})")
    return parts


def _chart_text(chart: Any) -> str:
    title = chart.chart_title.text_frame.text if chart.has_title and chart.chart_title.has_text_frame else ""
    plot = chart.plots[0] if len(chart.plots) else None
    if plot is None:
        return f"Chart: {title}"
    rows = [["", *[str(c) for c in plot.categories]]]
    rows += [[series.name, *[str(v) for v in series.values]] for series in plot.series]
    return f"Chart: {title}\n\n{_markdown_table(rows)}"


def _read_xlsx(path: Path, limit: int) -> str:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        sheets, size = [], 0
        for sheet in book.worksheets:
            rows = []
            for row in sheet.iter_rows(values_only=True):  # streamed: a sheet is never loaded whole
                cells = ["" if v is None else str(v) for v in row]
                if any(cells):
                    rows.append(cells)
                    size += sum(len(c) + 3 for c in cells)
                if size > limit:
                    break
            sheets.append(f"## {sheet.title}\n\n{_markdown_table(rows) if rows else '(empty)'}")
            if size > limit:
                break
        return "\n\n".join(sheets)
    finally:
        book.close()


def _read_csv(path: Path, limit: int) -> str:
    text = _read_text(path, limit)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error:
        return text
    return _markdown_table(rows) if rows else text


def _read_json(path: Path, limit: int) -> str:
    text = _read_text(path, limit)
    if path.stat().st_size > 4 * limit:  # cut already: no longer JSON, shown as it is
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _read_html(path: Path, limit: int) -> str:
    """A saved page's content: the main part when the page marks one, without navigation or scripts."""
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    soup = BeautifulSoup(_read_text(path, 20 * limit), "html.parser")  # markup is most of a page
    for tag in soup(["script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form"]):
        tag.decompose()
    for tag in soup.select('[role="navigation"], [role="banner"], [role="contentinfo"], [role="search"]'):
        tag.decompose()
    role_main = soup.find(attrs={"role": "main"})  # type: ignore[call-overload]  # bs4's stubs lack attrs=
    main = soup.find("main") or role_main or soup.find("article") or soup.body or soup
    return markdownify(str(main), heading_style="ATX").strip()


def _markdown_table(rows: list[list[str]]) -> str:
    width = max(len(row) for row in rows)
    cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


_READERS: dict[str, Callable[[Path, int], str]] = {
    ".pdf": _read_pdf, ".docx": _read_docx, ".pptx": _read_pptx, ".xlsx": _read_xlsx, ".xlsm": _read_xlsx,
    ".csv": _read_csv, ".tsv": _read_csv, ".json": _read_json, ".html": _read_html, ".htm": _read_html,
}
