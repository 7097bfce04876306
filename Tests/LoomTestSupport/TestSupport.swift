import Foundation

// Helpers every test target shares: the package root, fixtures, JSON references, temporary copies.

/// The package root, found by walking up from this file.
public let packageRoot: URL = {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        url.deleteLastPathComponent()
    }
    fatalError("Package.swift not found above \(#filePath)")
}()

public func fixture(_ path: String) -> String { packageRoot.appendingPathComponent("Fixtures/\(path)").path }

public func loadJSON(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

public func ints(_ value: Any?) -> [Int] { (value as? [Any] ?? []).map { ($0 as! NSNumber).intValue } }
public func floats(_ value: Any?) -> [Float] { (value as? [Any] ?? []).map { ($0 as! NSNumber).floatValue } }

public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "lengths \(a.count) and \(b.count) differ")
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// A fresh temporary folder, removed by the caller.
public func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("loom-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Copies a fixture folder into a temporary one, letting `edit` change it.
public func copyOfFixture(_ path: String, edit: (URL) throws -> Void = { _ in }) throws -> URL {
    let tmp = try temporaryDirectory().appendingPathComponent("copy")
    try FileManager.default.copyItem(atPath: fixture(path), toPath: tmp.path)
    try edit(tmp)
    return tmp
}

/// Rewrites a JSON file through `change`.
public func editJSON(_ url: URL, _ change: (inout [String: Any]) -> Void) throws {
    var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    change(&json)
    try JSONSerialization.data(withJSONObject: json).write(to: url)
}

/// Writes a safetensors file from `(name, dtype, shape, raw bytes)`.
public func writeSafetensors(_ url: URL, _ tensors: [(String, String, [Int], [UInt8])]) throws {
    var header: [String: Any] = [:]
    var data: [UInt8] = []
    for (name, dtype, shape, bytes) in tensors {
        header[name] = ["dtype": dtype, "shape": shape, "data_offsets": [data.count, data.count + bytes.count]]
        data += bytes
    }
    let headerBytes = try JSONSerialization.data(withJSONObject: header)
    var out = Data()
    var length = UInt64(headerBytes.count).littleEndian
    out.append(Data(bytes: &length, count: 8))
    out.append(headerBytes)
    out.append(contentsOf: data)
    try out.write(to: url)
}

// MARK: - Processes

/// The `loom` executable of this build (next to the test bundle, else `.build/debug/loom`), nil
/// when it is not built.
public let loomBinary: URL? = {
    var dir = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("loom")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir.deleteLastPathComponent()
    }
    let fallback = packageRoot.appendingPathComponent(".build/debug/loom")
    return FileManager.default.isExecutableFile(atPath: fallback.path) ? fallback : nil
}()

/// Runs `executable arguments` in `directory` (the package root by default) to its end; both pipes
/// are drained while it runs, so neither can fill up and block it.
public func runProcess(_ executable: URL, _ arguments: [String], in directory: URL = packageRoot) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stderrRead = DispatchGroup(), stderr = LockedData()
    stderrRead.enter()
    Thread {
        stderr.set(err.fileHandleForReading.readDataToEndOfFile())
        stderrRead.leave()
    }.start()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    stderrRead.wait()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr.get(), as: UTF8.self))
}

/// Bytes one thread hands another (`runProcess`'s stderr).
private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    func set(_ value: Data) { lock.withLock { data = value } }
    func get() -> Data { lock.withLock { data } }
}

/// A loopback port nothing listens on right now.
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw POSIXError(.EADDRNOTAVAIL) }
    return Int(UInt16(bigEndian: addr.sin_port))
}

#if canImport(Glibc)
import Glibc
#endif
