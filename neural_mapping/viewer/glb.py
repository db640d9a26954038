"""A minimal binary glTF (GLB) writer for a vertex-coloured triangle mesh, double-sided.

viser's ``add_mesh_simple`` takes one colour per mesh; ``add_glb`` takes any glTF. trimesh's
exporter writes a single-sided material, so walls seen from behind (a room seen from outside)
vanished; this writes positions (float32), normals (normalised int8, KHR_mesh_quantization: 4 bytes
a vertex instead of 12), COLOR_0 (normalised bytes) and indices (uint16 when the mesh has fewer than
65536 vertices, as a chunk of the live mesh has, else uint32) with a double-sided, non-metallic
material, and nothing else: 32 bytes a vertex of a closed mesh (two triangles each) instead of 52.
"""

from __future__ import annotations

import json
import struct

import numpy as np

_FLOAT, _BYTE, _UBYTE, _USHORT, _UINT = 5126, 5120, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _pad4(b: bytes, fill: bytes = b"\0") -> bytes:
    return b + fill * (-len(b) % 4)


def mesh_glb(verts: np.ndarray, faces: np.ndarray, colors_u8: np.ndarray, normals: np.ndarray) -> bytes:
    """GLB bytes of one mesh: verts (V, 3), faces (F, 3), colors_u8 (V, 3) uint8, normals (V, 3) unit."""
    v = np.ascontiguousarray(verts, np.float32)
    n = np.zeros((len(v), 4), np.int8)  # xyz + padding: vertex attributes are 4-byte aligned
    n[:, :3] = np.clip(np.round(np.asarray(normals, np.float64) * 127.0), -127, 127)
    c = np.ascontiguousarray(np.c_[colors_u8, np.full(len(v), 255, np.uint8)], np.uint8)  # RGBA: 4-byte aligned
    small = len(v) < 65536
    f = np.ascontiguousarray(faces, np.uint16 if small else np.uint32).ravel()
    blobs = [v.tobytes(), n.tobytes(), c.tobytes(), f.tobytes()]
    views, offset = [], 0
    for i, b in enumerate(blobs):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(b),
                      "target": _ELEMENT_ARRAY_BUFFER if i == 3 else _ARRAY_BUFFER})
        if i == 1:
            views[-1]["byteStride"] = 4
        offset += len(_pad4(b))
    accessors = [
        {"bufferView": 0, "componentType": _FLOAT, "count": len(v), "type": "VEC3",
         "min": v.min(0).tolist() if len(v) else [0, 0, 0], "max": v.max(0).tolist() if len(v) else [0, 0, 0]},
        {"bufferView": 1, "componentType": _BYTE, "normalized": True, "count": len(n), "type": "VEC3"},
        {"bufferView": 2, "componentType": _UBYTE, "normalized": True, "count": len(c), "type": "VEC4"},
        {"bufferView": 3, "componentType": _USHORT if small else _UINT, "count": len(f), "type": "SCALAR"},
    ]
    gltf = {
        "asset": {"version": "2.0", "generator": "neural_mapping.viewer"},
        "extensionsUsed": ["KHR_mesh_quantization"], "extensionsRequired": ["KHR_mesh_quantization"],
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2}, "indices": 3,
                                    "material": 0, "mode": 4}]}],
        "materials": [{"doubleSided": True,
                       "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0,
                                                "roughnessFactor": 1.0}}],
        "buffers": [{"byteLength": offset}], "bufferViews": views, "accessors": accessors,
    }
    js = _pad4(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    binary = b"".join(_pad4(b) for b in blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join([struct.pack("<III", 0x46546C67, 2, total), struct.pack("<II", len(js), 0x4E4F534A), js,
                     struct.pack("<II", len(binary), 0x004E4942), binary])
