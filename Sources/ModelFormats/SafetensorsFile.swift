import Foundation
import LoomCore

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public var dtype: DType
    public var shape: [Int]
    /// Byte range inside the data section.
    public var dataOffsets: Range<Int>

    public var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets}}`, then the raw data.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw LoomError.fileNotFound(path: path) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw LoomError.invalidFile(path: path, reason: "cannot be read (\(error.localizedDescription))")
        }
        guard data.count >= 8 else {
            throw LoomError.invalidFile(path: path, reason: "truncated: \(data.count) bytes, shorter than the 8-byte header length")
        }
        // A hostile or corrupt file may declare any 64-bit length: clamp instead of trapping.
        let declaredLength = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        let headerLength = Int(clamping: declaredLength)
        guard headerLength > 1, headerLength <= 100_000_000, 8 + headerLength <= data.count else {
            throw LoomError.invalidFile(path: path, reason: "bad header: declared length \(headerLength) does not fit a \(data.count)-byte file")
        }
        let headerData = data.subdata(in: 8..<(8 + headerLength))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw LoomError.invalidFile(path: path, reason: "bad header: not a JSON object")
        }
        let dataLength = data.count - 8 - headerLength
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = "\(v)" }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = (entry["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  let offsets = (entry["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  offsets.count == 2
            else {
                throw LoomError.invalidFile(path: path, reason: "bad header entry for tensor '\(name)'")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw LoomError.invalidFile(path: path, reason: "tensor '\(name)' has unsupported dtype \(dtypeName) (F32, F16, BF16 are supported)")
            }
            let info = TensorInfo(dtype: dtype, shape: shape, dataOffsets: offsets[0]..<max(offsets[0], offsets[1]))
            // The byte count, nil when the shape's product overflows (a hostile header).
            let byteCount = shape.allSatisfy({ $0 >= 0 }) ? (shape + [dtype.byteCount]).reduce(Int?(1)) { acc, d in
                acc.flatMap { a in let (p, o) = a.multipliedReportingOverflow(by: d); return o ? nil : p }
            } : nil
            guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] <= dataLength,
                  let byteCount, byteCount == offsets[1] - offsets[0]
            else {
                throw LoomError.invalidFile(
                    path: path,
                    reason: "tensor '\(name)' (\(dtypeName) \(shape)) has data offsets \(offsets) outside or inconsistent with the \(dataLength)-byte data section (truncated file?)")
            }
            tensors[name] = info
        }
        self.data = data
        self.tensors = tensors
        self.metadata = metadata
        self.dataStart = 8 + headerLength
    }

    /// Calls `body` with the raw bytes of tensor `name`.
    public func withBytes<R>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let info = tensors[name] else { throw LoomError.missingTensor(path: path, tensor: name) }
        return try data.withUnsafeBytes { raw in
            let start = dataStart + info.dataOffsets.lowerBound
            return try body(UnsafeRawBufferPointer(rebasing: raw[start..<(start + info.dataOffsets.count)]))
        }
    }

    /// Tensor `name` converted to `Float`.
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else { throw LoomError.missingTensor(path: path, tensor: name) }
        return try withBytes(of: name) { bytes in
            [Float](unsafeUninitializedCapacity: info.count) { buffer, initialized in
                if let base = bytes.baseAddress, info.count > 0 {
                    HalfConversion.toFloat(base, dtype: info.dtype, count: info.count, into: buffer.baseAddress!)
                }
                initialized = info.count
            }
        }
    }
}
