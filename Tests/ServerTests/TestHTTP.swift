import Foundation

@testable import Server

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum TestHTTPError: Error {
    case connect(Int32), write, read, malformed(String), closed
}

/// A response read off the wire.
struct TestResponse {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    func json() throws -> JSON { try JSON.parse(body) }

    /// The `data:` payloads of an SSE body, in order (`[DONE]` included as text).
    var events: [String] {
        text.components(separatedBy: "\n\n").compactMap { frame in
            frame.hasPrefix("data: ") ? String(frame.dropFirst(6)) : nil
        }
    }
}

/// A tiny blocking HTTP/1.1 client over a POSIX socket, run on its own thread so it never blocks
/// Swift's cooperative pool. It reads raw frames, so tests see exactly what went over loopback and
/// can hang up in the middle of a stream.
final class TestConnection: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []

    /// `readTimeout`: seconds a read may wait for the next bytes before it fails.
    init(port: Int, readTimeout: Int = 30) throws {
        fd = try Self.openSocket(port: port, readTimeout: readTimeout)
    }

    /// A socket connected to the loopback port. It is opened here, not in `init`, because a
    /// class whose `init` throws after its properties are set still runs `deinit`: closing the
    /// socket there as well closed it twice, and the second close hit whatever file another test
    /// had opened meanwhile under the same number.
    private static func openSocket(port: Int, readTimeout: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestHTTPError.connect(errno) }
        var timeout = timeval(tv_sec: readTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let error = errno
            close(fd)
            throw TestHTTPError.connect(error)
        }
        return fd
    }

    deinit { close(fd) }

    /// Closes the socket now (a client that goes away mid-stream).
    func hangUp() { shutdown(fd, Int32(SHUT_RDWR)) }

    func send(method: String, path: String, headers: [String: String], body: [UInt8]?) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let bytes = Array(head.utf8) + (body ?? [])
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestHTTPError.write }
            sent += n
        }
    }

    /// Reads more bytes; false at end of stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { throw TestHTTPError.read }
        if n == 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                let l = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
                buffer.removeFirst(i + 1)
                return l
            }
            guard try fill() else { throw TestHTTPError.closed }
        }
    }

    private func bytes(_ count: Int) throws -> [UInt8] {
        while buffer.count < count { guard try fill() else { throw TestHTTPError.closed } }
        let out = Array(buffer[..<count])
        buffer.removeFirst(count)
        return out
    }

    func readHead() throws -> (status: Int, headers: [String: String]) {
        let statusLine = try line()
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestHTTPError.malformed(statusLine) }
        var headers: [String: String] = [:]
        while true {
            let l = try line()
            if l.isEmpty { break }
            if let colon = l.firstIndex(of: ":") {
                headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return (status, headers)
    }

    /// The next piece of a chunked body; nil after the last chunk.
    func readChunk() throws -> [UInt8]? {
        let sizeLine = try line()
        guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else { throw TestHTTPError.malformed(sizeLine) }
        if size == 0 {
            _ = try? line()
            return nil
        }
        let data = try bytes(size)
        _ = try line()
        return data
    }

    func readBody(headers: [String: String]) throws -> [UInt8] {
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var body: [UInt8] = []
            while let c = try readChunk() { body += c }
            return body
        }
        if let length = headers["content-length"].flatMap(Int.init) { return try bytes(length) }
        while try fill() {}
        defer { buffer.removeAll() }
        return buffer
    }
}

enum TestHTTP {
    /// Runs a blocking operation on a new thread.
    static func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }

    static func request(port: Int, method: String, path: String, headers: [String: String] = [:], body: [UInt8]? = nil) async throws -> TestResponse {
        try await onThread {
            let c = try TestConnection(port: port)
            try c.send(method: method, path: path, headers: headers, body: body)
            let head = try c.readHead()
            return TestResponse(status: head.status, headers: head.headers, body: try c.readBody(headers: head.headers))
        }
    }
}
