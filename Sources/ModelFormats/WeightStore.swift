import Foundation
import LoomCore

/// The weights of a checkpoint folder: a single `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`.
public final class WeightStore: @unchecked Sendable {
    public let directory: String
    private var files: [String: SafetensorsFile] = [:]
    private var location: [String: String] = [:]

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        let index = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: index) {
            guard let data = fm.contents(atPath: index),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else {
                throw LoomError.invalidFile(path: index, reason: "not a safetensors index (no 'weight_map' object)")
            }
            for shard in Set(map.values).sorted() {
                guard !shard.contains("/") else {
                    throw LoomError.invalidFile(path: index, reason: "shard name '\(shard)' must be a file in the same folder")
                }
                files[shard] = try SafetensorsFile(path: (directory as NSString).appendingPathComponent(shard))
            }
            for (name, shard) in map {
                guard files[shard]?.tensors[name] != nil else {
                    throw LoomError.missingTensor(path: (directory as NSString).appendingPathComponent(shard), tensor: name)
                }
                location[name] = shard
            }
        } else if fm.fileExists(atPath: single) {
            let file = try SafetensorsFile(path: single)
            files["model.safetensors"] = file
            for name in file.tensors.keys { location[name] = "model.safetensors" }
        } else {
            let bin = (directory as NSString).appendingPathComponent("pytorch_model.bin")
            if fm.fileExists(atPath: bin) {
                throw LoomError.unsupported("\(bin): PyTorch .bin checkpoints are not supported; convert to safetensors")
            }
            throw LoomError.fileNotFound(path: single)
        }
    }

    public var tensorNames: [String] { location.keys.sorted() }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    public func info(_ name: String) throws -> (file: SafetensorsFile, info: TensorInfo) {
        guard let shard = location[name], let file = files[shard], let info = file.tensors[name] else {
            throw LoomError.missingTensor(path: directory, tensor: name)
        }
        return (file, info)
    }

    /// Checks that tensor `name` has `shape`, then calls `body` with its dtype and bytes.
    public func withTensor<R>(_ name: String, shape: [Int], _ body: (DType, UnsafeRawPointer) throws -> R) throws -> R {
        let (file, info) = try info(name)
        guard info.shape == shape else {
            throw LoomError.shapeMismatch(path: file.path, tensor: name, expected: shape, actual: info.shape)
        }
        return try file.withBytes(of: name) { try body(info.dtype, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!) }
    }
}
