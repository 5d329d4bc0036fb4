"""A grpcio server for tests/protos/bookstore.proto, the JSON transcoder's upstream.

The proto is compiled when the tests run (grpcio-tools' protoc, with googleapis-common-protos
for google/api/annotations.proto): the descriptor set the gateway reads and the Python
stubs the server uses, into a temporary directory. Nothing generated is committed.

The servicer echoes what it was sent, so a test reads from the JSON answer how the gateway
built the gRPC request, and fails on demand with any status (and details).
"""

import importlib
import sys
import time
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import google.api
import grpc
import grpc_tools
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2
from grpc_tools import protoc

PROTOS = Path(__file__).parent / "protos"


@attrs.frozen
class Bookstore:
    descriptor_set: Path
    pb2: ModuleType
    pb2_grpc: ModuleType


def _include_dir_with(name: str, package: Any) -> str:
    for path in package.__path__:
        if (Path(path) / name).exists():
            return str(Path(path).parents[1])
    raise FileNotFoundError(name)


def compile_bookstore(out: Path) -> Bookstore:
    """Compiles bookstore.proto into `out`: the descriptor set and importable stubs."""
    descriptor_set = out / "bookstore.pb"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{_include_dir_with('annotations.proto', google.api)}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
        "--include_imports",
        f"--descriptor_set_out={descriptor_set}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "bookstore.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on bookstore.proto")
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("bookstore_pb2")
        pb2_grpc = importlib.import_module("bookstore_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return Bookstore(descriptor_set, pb2, pb2_grpc)


class BookstoreServicer:
    def __init__(self, pb2: ModuleType) -> None:
        self.pb2 = pb2
        self.deleted: list[int] = []
        self.metadata: list[dict[str, str]] = []

    def _seen(self, context: grpc.ServicerContext) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def ListShelves(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        shelves = [self.pb2.Shelf(id=1, theme="Fiction"), self.pb2.Shelf(id=2, theme="Poetry")]
        return self.pb2.ListShelvesResponse(shelves=shelves)

    def CreateShelf(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        shelf = self.pb2.Shelf()
        shelf.CopyFrom(request.shelf)
        shelf.id = 100
        shelf.tags.append(f"request:{request.request_id}")
        return shelf

    def GetShelf(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        if request.shelf == 404:
            context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
        return self.pb2.Shelf(id=request.shelf, theme=f"Theme {request.shelf}")

    def DeleteShelf(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        self.deleted.append(request.shelf)
        return empty_pb2.Empty()

    def UpdateBook(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        book = self.pb2.Book()
        book.CopyFrom(request.book)
        book.tags.append(f"validate_only:{request.validate_only}")
        return book

    def PutBook(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        return request

    def ListBooks(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        fail_at, _, code = request.fail_after.partition(":")
        for i in range(request.count):
            if fail_at and fail_at != "slow" and i == int(fail_at):
                context.abort(grpc.StatusCode[code], f"failed after {i}")
            if fail_at == "slow":
                time.sleep(0.05)
            yield self.pb2.Book(name=f"shelves/{request.shelf}/books/{i}", page_count=i)

    def GetFile(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        return self.pb2.File(path=request.path)

    def GetTitle(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        return self.pb2.Shelf(id=request.shelf, theme=f"Theme {request.shelf}")

    def Search(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        return request

    def Fail(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == request.code))
        if request.with_details:
            detail = any_pb2.Any()
            detail.Pack(self.pb2.Shelf(id=7, theme="why"))
            status = status_pb2.Status(code=request.code, message=request.message)
            status.details.append(detail)
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status.SerializeToString()),)
            )
        context.abort(code, request.message)

    def Unmapped(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(context)
        return request


def start_bookstore(bookstore: Bookstore) -> tuple[grpc.Server, int, BookstoreServicer]:
    servicer = BookstoreServicer(bookstore.pb2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    bookstore.pb2_grpc.add_BookstoreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, servicer
