import Foundation
import LoomCore

/// Writes a safetensors file: an 8-byte little-endian header length, the JSON header (padded with
/// spaces to 8 bytes), then the tensors back to back in header order.
struct SafetensorsWriter {
    struct Entry {
        var name: String
        var shape: [Int]
        var byteCount: Int { shape.reduce(1, *) * dtype.byteCount }
        var dtype: DType
    }

    var entries: [Entry] = []
    var metadata: [String: String] = ["format": "pt"]

    /// The header bytes (length prefix included) and each tensor's offset in the data section.
    func header() throws -> (bytes: [UInt8], offsets: [Int], dataSize: Int) {
        var object: [String: Any] = ["__metadata__": metadata]
        var offsets: [Int] = []
        var offset = 0
        for e in entries {
            object[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.byteCount]]
            offsets.append(offset)
            offset += e.byteCount
        }
        var json = Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) }
        bytes += json
        return (bytes, offsets, offset)
    }

    /// Writes the file; `fill(i, buffer)` writes tensor `i`'s bytes into its slice of the data.
    func write(to path: String, fill: (Int, UnsafeMutableRawBufferPointer) -> Void) throws {
        let (head, offsets, dataSize) = try header()
        var file = [UInt8](repeating: 0, count: head.count + dataSize)
        file.withUnsafeMutableBytes { all in
            head.withUnsafeBytes { all.copyMemory(from: $0) }
            for (i, e) in entries.enumerated() {
                let start = head.count + offsets[i]
                fill(i, UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + e.byteCount)]))
            }
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(file)) else {
            throw LoomError.invalidArgument("cannot write \(path)")
        }
    }
}
