"""Writing OpenSim setup XML files (the documents OpenSim's tools and GUI load).

Generic: a tool element is built from (tag, value) pairs, so the IK, ID and scale helpers share
one writer. Values are formatted the way OpenSim reads them: booleans as true/false, infinity as
``Inf``, numbers with full double precision, pairs (time ranges) space-separated. Paths should be
absolute: OpenSim resolves relative ones against the setup file's folder or the working
directory, which differ between the GUI and scripts.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable
from xml.etree import ElementTree as ET

from .atomic import atomic_write

#: OpenSim 4.x document version written in the root element.
DOCUMENT_VERSION = "40000"


def format_value(value: Any) -> str:
    """Text of one property value as OpenSim's XML reader expects it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return " ".join(format_value(v) for v in value)
    return str(value)


def add_property(parent: ET.Element, tag: str, value: Any, comment: str | None = None) -> ET.Element:
    """Append ``<tag>value</tag>`` (with an optional comment before it) and return it."""
    if comment:
        parent.append(ET.Comment(f" {comment} "))
    el = ET.SubElement(parent, tag)
    el.text = format_value(value)
    return el


def object_element(tag: str, name: str | None = None,
                   properties: Iterable[tuple[str, Any]] = ()) -> ET.Element:
    """An OpenSim object element ``<tag name="...">`` holding simple properties."""
    el = ET.Element(tag, {"name": name} if name else {})
    for key, value in properties:
        add_property(el, key, value)
    return el


def set_element(tag: str, name: str | None, objects: Iterable[ET.Element]) -> ET.Element:
    """An OpenSim ``Set`` (``<tag><objects>...</objects><groups/></tag>``)."""
    el = ET.Element(tag, {"name": name} if name else {})
    objs = ET.SubElement(el, "objects")
    for obj in objects:
        objs.append(obj)
    ET.SubElement(el, "groups")
    return el


def document(root_object: ET.Element, version: str = DOCUMENT_VERSION) -> ET.ElementTree:
    doc = ET.Element("OpenSimDocument", {"Version": version})
    doc.append(root_object)
    return ET.ElementTree(doc)


def write_document(root_object: ET.Element, path: str | os.PathLike,
                   header_comment: str | None = None) -> Path:
    """Write ``<OpenSimDocument>`` holding ``root_object`` to ``path``, atomically."""
    path = Path(path)
    tree = document(root_object)
    ET.indent(tree, space="\t")
    body = ET.tostring(tree.getroot(), encoding="unicode")
    with atomic_write(path) as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8" ?>\n')
        if header_comment:
            fh.write(f"<!-- {header_comment.replace('--', '- -')} -->\n")
        fh.write(body + "\n")
    return path
