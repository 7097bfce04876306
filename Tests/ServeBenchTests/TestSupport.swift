@_exported import LoomTestSupport
import Foundation

/// A fresh folder under the temporary directory, removed by the caller.
func temporaryFolder(_ name: String) throws -> String {
    let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("servebench-\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
