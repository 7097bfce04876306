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
