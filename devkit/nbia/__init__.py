"""A local stand-in for TCIA's NBIA v4 REST API, serving DICOM folders, with fault injection.

from devkit.nbia import FaultKind, serve

with serve(root) as server:               # 127.0.0.1, a free port
    server.faults.add(FaultKind.HTTP_503, endpoint="getImage", count=2)
    ...  # point a client at server.url
"""

from devkit.nbia.catalogue import Catalogue, CollectionInfo, Instance, Series
from devkit.nbia.faults import Fault, FaultKind, FaultPlan
from devkit.nbia.server import NbiaServer, RequestRecord, main, new_file_names, serve

__all__ = [
    "Catalogue",
    "CollectionInfo",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Instance",
    "NbiaServer",
    "RequestRecord",
    "Series",
    "main",
    "new_file_names",
    "serve",
]
