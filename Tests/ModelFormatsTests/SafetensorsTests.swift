import Foundation
import LoomCore
import ModelFormats
import Testing

@Suite struct SafetensorsTests {
    func bytes(_ floats: [Float]) -> [UInt8] { floats.withUnsafeBytes { Array($0) } }

    @Test func readsF32F16AndBF16() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        let values: [Float] = [1, -2.5, 0.15625, 3e-3]
        let f16 = values.flatMap { v -> [UInt8] in let b = HalfConversion.floatToF16(v); return [UInt8(b & 0xFF), UInt8(b >> 8)] }
        let bf16 = values.flatMap { v -> [UInt8] in let b = HalfConversion.floatToBF16(v); return [UInt8(b & 0xFF), UInt8(b >> 8)] }
        try writeSafetensors(url, [("a", "F32", [2, 2], bytes(values)), ("b", "F16", [4], f16), ("c", "BF16", [4], bf16)])
        let file = try SafetensorsFile(path: url.path)
        #expect(try file.floats("a") == values)
        #expect(maxAbsDifference(try file.floats("b"), values) < 1e-3)
        #expect(maxAbsDifference(try file.floats("c"), values) < 2e-2)
        #expect(try file.floats("c")[1] == -2.5)
        #expect(file.tensors["a"]?.shape == [2, 2])
    }

    @Test func truncatedFileNamesTheFileAndTensor() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        try writeSafetensors(url, [("w", "F32", [8], bytes(Array(repeating: 1, count: 8)))])
        let data = try Data(contentsOf: url)
        try data.prefix(data.count - 4).write(to: url)
        #expect {
            try SafetensorsFile(path: url.path)
        } throws: { error in
            let text = "\(error)"
            return text.contains(url.path) && text.contains("'w'") && text.contains("truncated")
        }
        try Data([1, 2, 3]).write(to: url)
        #expect(throws: LoomError.self) { try SafetensorsFile(path: url.path) }
    }

    @Test func badHeaderIsAClearError() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        var length = UInt64(10).littleEndian
        var data = Data(bytes: &length, count: 8)
        data.append(Data("not json!!".utf8))
        try data.write(to: url)
        #expect(throws: LoomError.invalidFile(path: url.path, reason: "bad header: not a JSON object")) {
            try SafetensorsFile(path: url.path)
        }
        var huge = UInt64(1 << 40).littleEndian
        try Data(bytes: &huge, count: 8).write(to: url)
        #expect(throws: LoomError.self) { try SafetensorsFile(path: url.path) }
        try writeSafetensors(url, [("w", "I8", [1], [1])])
        #expect {
            try SafetensorsFile(path: url.path)
        } throws: { "\($0)".contains("unsupported dtype I8") }
    }

    @Test func shardedCheckpointResolvesEveryTensor() throws {
        let store = try WeightStore(directory: fixture("models/mistral-tiny"))
        #expect(store.tensorNames.contains("model.layers.2.mlp.down_proj.weight"))
        let (_, info) = try store.info("model.embed_tokens.weight")
        #expect(info.dtype == .f16 && info.shape == [512, 128])
    }

    @Test func missingTensorAndWrongShapeNameTheTensor() throws {
        let store = try WeightStore(directory: fixture("stories260k"))
        #expect(throws: LoomError.missingTensor(path: fixture("stories260k"), tensor: "model.nope")) {
            try store.withTensor("model.nope", shape: [1]) { _, _ in }
        }
        #expect(throws: LoomError.shapeMismatch(path: fixture("stories260k") + "/model.safetensors", tensor: "model.norm.weight", expected: [65], actual: [64])) {
            try store.withTensor("model.norm.weight", shape: [65]) { _, _ in }
        }
    }

    @Test func shardIndexNamingAMissingShardIsAnError() throws {
        let copy = try copyOfFixture("models/mistral-tiny") { dir in
            let shards = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("model-") }
            try FileManager.default.removeItem(at: dir.appendingPathComponent(shards.sorted()[0]))
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        #expect(throws: LoomError.self) { try WeightStore(directory: copy.path) }
    }

    @Test func modelWithAWrongShapeInTheCheckpointFailsToLoad() throws {
        let copy = try copyOfFixture("stories260k") { dir in
            try editJSON(dir.appendingPathComponent("config.json")) { $0["intermediate_size"] = 180 }
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let config = try ModelConfig.load(directory: copy.path)
        let store = try WeightStore(directory: copy.path)
        #expect {
            try store.withTensor("model.layers.0.mlp.gate_proj.weight", shape: [config.intermediateSize, config.hiddenSize]) { _, _ in }
        } throws: { "\($0)".contains("gate_proj.weight' has shape [172, 64], expected [180, 64]") }
    }
}
