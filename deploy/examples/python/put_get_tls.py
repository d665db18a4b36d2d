#!/usr/bin/env python3
"""Put a key and get it back through ringkv from Python's grpcio, over TLS
with a bearer token: what a service written in Python needs to talk to a
secured cluster.

    python3 put_get_tls.py --endpoint 127.0.0.1:7379 --cacert certs/ca.crt \
        --token "$RINGKV_TOKEN" KEY VALUE

It compiles ringkv's .proto files (proto/ringkv/v1 in the repository) with
grpcio-tools at start, so it needs `pip install grpcio grpcio-tools` and
nothing generated ahead. It prints the value read back and exits 0; a
refusal prints the gRPC code and message and exits 1.
"""

import argparse
import importlib
import importlib.resources
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.join(HERE, "..", "..", "..", "proto")


def load_stubs(proto_dir):
    """Generates the KV stubs into a temporary directory and imports them."""
    out = tempfile.mkdtemp(prefix="ringkv-python-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = ["ringkv/v1/common.proto", "ringkv/v1/kv.proto"]
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{well_known}",
         f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    if code != 0:
        sys.exit(f"protoc failed on {proto_dir} (exit {code})")
    sys.path.insert(0, out)
    kv_pb2 = importlib.import_module("ringkv.v1.kv_pb2")
    kv_grpc = importlib.import_module("ringkv.v1.kv_pb2_grpc")
    return kv_pb2, kv_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="127.0.0.1:7379")
    parser.add_argument("--cacert", required=True, help="PEM CA of the client ports")
    parser.add_argument("--token", default=os.environ.get("RINGKV_TOKEN"))
    parser.add_argument("--cert", help="PEM client certificate (nodes with tls.client_ca)")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("--server-name", help="name the node's certificate carries, if not the endpoint's host")
    parser.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR)
    parser.add_argument("key")
    parser.add_argument("value")
    args = parser.parse_args()

    kv_pb2, kv_grpc = load_stubs(args.proto_dir)
    with open(args.cacert, "rb") as f:
        root = f.read()
    chain = key = None
    if args.cert:
        with open(args.cert, "rb") as f:
            chain = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    if args.token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(args.token))
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    with grpc.secure_channel(args.endpoint, creds, options=options) as channel:
        stub = kv_grpc.KVStub(channel)
        try:
            stub.Put(kv_pb2.PutRequest(key=args.key.encode(), value=args.value.encode()), timeout=10)
            reply = stub.Get(kv_pb2.GetRequest(key=args.key.encode()), timeout=10)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    if not reply.found or len(reply.siblings) != 1:
        print(f"unexpected answer: {reply}", file=sys.stderr)
        return 1
    print(reply.siblings[0].value.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
