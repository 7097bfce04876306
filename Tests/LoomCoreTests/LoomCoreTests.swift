import LoomCore
import Testing

@Suite struct LoomCoreTests {
    @Test func halfConversionsRoundToNearestEven() {
        #expect(HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(1.0)) == 1.0)
        // 1 + 2⁻⁸ lies halfway between two bf16 values; ties go to the even one (1.0).
        #expect(HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(1 + 1.0 / 256)) == 1.0)
        #expect(HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(1 + 3.0 / 256)) == 1 + 4.0 / 256)
        #expect(HalfConversion.floatToBF16(.nan) == 0x7FC0)
        #expect(HalfConversion.f16ToFloat(HalfConversion.floatToF16(0.333)) == Float(Float16(0.333)))
    }

    @Test func shapeViewsShareStorage() {
        let s = Shape(4, 3, 2)
        #expect(s.count == 24 && s.rowCount == 6 && s.last == 2 && s.dims == [4, 3, 2])
        final class Box {}
        let t = DeviceTensor(storage: Box(), shape: s, dtype: .f32)
        let v = t.rows(1, 2)
        #expect(v.offset == 6 && v.shape.dims == [2, 3, 2])
        #expect(v.reshaped(Shape(12)).shape.rank == 1)
    }

    @Test func shardsCoverHeadsKVHeadsAndVocabulary() {
        let c = ModelConfig(architecture: .llama, vocabSize: 10, hiddenSize: 64, intermediateSize: 12, numLayers: 1,
                            numHeads: 8, numKVHeads: 2, headDim: 8)
        let shards = (0..<4).map { TensorShard(rank: $0, size: 4) }
        #expect(shards.map { $0.heads(c) } == [0..<2, 2..<4, 4..<6, 6..<8])
        // Four ranks, two KV heads: each KV head is replicated on the two ranks whose queries use it.
        #expect(shards.map { $0.kvHeads(c) } == [0..<1, 0..<1, 1..<2, 1..<2])
        #expect(shards.map { $0.vocab(c) } == [0..<3, 3..<6, 6..<9, 9..<10])
        #expect(shards[3].localConfig(c).vocabSize == 4, "three padded rows plus the zero row")
        #expect(TensorShard.whole.localConfig(c) == c)
    }
}
