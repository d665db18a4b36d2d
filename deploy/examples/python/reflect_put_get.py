#!/usr/bin/env python3
"""Discover ringkv's API through gRPC server reflection and put and get a
key with no .proto file and no generated stubs: what a generic tool
(grpcurl, evans, a Python script) does against a node's client port.

    python3 reflect_put_get.py --endpoint 127.0.0.1:7379 --reflection v1alpha

A node serves reflection as both grpc.reflection.v1 and
grpc.reflection.v1alpha; --reflection picks which one to ask. The two
versions carry the same messages and differ only in the service path, so
the v1alpha message classes of grpcio-reflection (which ships no v1
module) serve both.

Steps: list the services, fetch the file that defines the KV service and
every file it imports, build a descriptor pool from those
FileDescriptorProtos, make the request and response classes from it, then
Put a unique key and Get it back through generic unary calls on the method
paths. Prints what it found and `round trip ok: ...`; exits 1 on a gRPC
error, a reflection error or a value that does not come back. Needs
`pip install grpcio grpcio-reflection` (scripts/python-env.sh makes a
virtualenv with both) and a node without TLS on its client port.
"""

import argparse
import sys
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2

# The reflection method's path in each version; the messages are the same.
REFLECTION_PATHS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}
# The client API (proto/ringkv/v1/kv.proto).
KV_SERVICE = "ringkv.v1.KV"
# How long any one call may take, in seconds.
CALL_TIMEOUT = 10


class ReflectionError(Exception):
    """The node answered a reflection request with an error_response."""


class Reflection:
    """Asks a node's reflection service one question per call."""

    def __init__(self, channel, version):
        self.info = channel.stream_stream(
            REFLECTION_PATHS[version],
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

    def ask(self, **question):
        """Sends one ServerReflectionRequest and returns its single answer."""
        request = reflection_pb2.ServerReflectionRequest(**question)
        answers = list(self.info(iter([request]), timeout=CALL_TIMEOUT))
        if len(answers) != 1:
            raise ReflectionError(f"{len(answers)} answers to {question}")
        answer = answers[0]
        if answer.HasField("error_response"):
            e = answer.error_response
            raise ReflectionError(f"{question}: code {e.error_code}: {e.error_message}")
        return answer

    def services(self):
        answer = self.ask(list_services="")
        return [s.name for s in answer.list_services_response.service]

    def files(self, **question):
        """The FileDescriptorProtos a file_by_filename or
        file_containing_symbol question returns (the server may add the
        file's dependencies)."""
        answer = self.ask(**question)
        protos = []
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto()
            proto.ParseFromString(raw)
            protos.append(proto)
        return protos


def load_pool(reflection, symbol):
    """A descriptor pool holding the file that defines `symbol` and every
    file it imports, each fetched by reflection when the server did not
    send it already. Files are added dependencies first, as the pool
    requires."""
    files = {f.name: f for f in reflection.files(file_containing_symbol=symbol)}
    wanted = [d for f in list(files.values()) for d in f.dependency]
    while wanted:
        name = wanted.pop()
        if name in files:
            continue
        for f in reflection.files(file_by_filename=name):
            files.setdefault(f.name, f)
            wanted.extend(f.dependency)
        if name not in files:
            raise ReflectionError(f"the server did not return {name}")
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        added.add(name)
        for dependency in files[name].dependency:
            add(dependency)
        pool.Add(files[name])

    for name in sorted(files):
        add(name)
    return pool, sorted(files)


def unary(channel, service, pool, method_name):
    """A generic unary call to `method_name` of `service`, with the
    request and response classes made from the pool."""
    method = service.methods_by_name[method_name]
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return call, request


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="127.0.0.1:7379", help="a node's client port")
    parser.add_argument("--reflection", choices=sorted(REFLECTION_PATHS), default="v1")
    parser.add_argument("--key", help="key to write (default: a fresh unique one)")
    args = parser.parse_args()

    key = (args.key or f"reflect/{args.reflection}/{uuid.uuid4().hex}").encode()
    value = f"written-via-{args.reflection}-{uuid.uuid4().hex}".encode()
    with grpc.insecure_channel(args.endpoint) as channel:
        try:
            reflection = Reflection(channel, args.reflection)
            services = reflection.services()
            print(f"reflection {args.reflection}: services {', '.join(sorted(services))}")
            if KV_SERVICE not in services:
                print(f"{KV_SERVICE} is not among the services listed", file=sys.stderr)
                return 1
            pool, files = load_pool(reflection, KV_SERVICE)
            print(f"files: {', '.join(files)}")
            service = pool.FindServiceByName(KV_SERVICE)
            for method in service.methods:
                print(
                    f"method /{service.full_name}/{method.name}"
                    f"({method.input_type.full_name}) -> {method.output_type.full_name}"
                )
            put, put_request = unary(channel, service, pool, "Put")
            get, get_request = unary(channel, service, pool, "Get")
            put(put_request(key=key, value=value), timeout=CALL_TIMEOUT)
            print(f"put {key.decode()} = {value.decode()}")
            reply = get(get_request(key=key), timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except (ReflectionError, KeyError, TypeError) as e:
            print(f"reflection failed: {e!r}", file=sys.stderr)
            return 1
    read = [s.value for s in reply.siblings]
    print(f"get {key.decode()} -> found={reply.found} siblings={[v.decode() for v in read]}")
    if not reply.found or read != [value]:
        print(f"mismatch: wrote {value!r}, read {read!r}", file=sys.stderr)
        return 1
    print(f"round trip ok: {args.reflection} discovered {KV_SERVICE}, Put then Get returned the value written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
