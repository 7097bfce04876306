import LoomCore
import ModelFormats
import Models

/// Slot loads: an adapter packed once per rank into page-locked host memory, then copied into a
/// slot asynchronously on each backend's copy stream.
extension LoRAManager {
    /// Loads an adapter into a slot on every rank: asynchronous copies of its staged image on each
    /// backend's copy stream (`uploadAsync`), which the step's kernels wait for after `fenceUploads`.
    /// Only the adapter's own rank is copied: kernels read rows `j < slotRanks[slot]`.
    func copyIntoSlot(_ ref: AdapterRef, slot: Int) throws {
        let images = try stagedImages(for: ref)
        let r = max(maxRank, 1), slots = options.maxLorasPerBatch
        for (rb, image) in zip(ranks, images) {
            let e = rb.backend.weightDType.byteCount, ra = image.rank
            for layer in 0..<base.numLayers {
                for g in groups {
                    let buf = rb.layers[layer][g]!, entry = image.entries[layer][g]!
                    let stack = Self.modules(of: g).count, k = buf.a.shape[2], totalOut = buf.outOffsets.last!
                    let aRows = buf.a.reshaped(Shape(slots * stack * r, k))
                    for m in 0..<stack {
                        rb.backend.uploadAsync(from: image.buffer, offset: entry.a + m * ra * k * e, pitch: k * e,
                                               to: aRows.rows((slot * stack + m) * r, ra), rows: ra, rowBytes: k * e)
                    }
                    if let b = buf.b ?? buf.deltaB {
                        rb.backend.uploadAsync(from: image.buffer, offset: entry.b, pitch: ra * e,
                                               to: b.reshaped(Shape(slots * totalOut, r)).rows(slot * totalOut, totalOut), rows: totalOut, rowBytes: ra * e)
                    }
                    if let wide = buf.fusedWeight {
                        // Each module's rows of B into the slot's columns of the widened weight (its own
                        // R columns a slot with split extensions), and (consumer deltas) its rows of A
                        // below the weight's own.
                        let split = splitGroups.contains(g)
                        for m in 0..<stack {
                            let rows = buf.outOffsets[m + 1] - buf.outOffsets[m]
                            rb.backend.uploadAsync(from: image.buffer, offset: entry.b + buf.outOffsets[m] * ra * e, pitch: ra * e,
                                                   to: wide.rows(buf.outOffsets[m], rows), column: k + (split ? slot : slot * stack + m) * r,
                                                   rows: rows, rowBytes: ra * e)
                            if wide.shape[0] > totalOut {
                                rb.backend.uploadAsync(from: image.buffer, offset: entry.a + m * ra * k * e, pitch: k * e,
                                                       to: wide.rows(totalOut + (slot * stack + m) * r, ra), rows: ra, rowBytes: k * e)
                            }
                        }
                    }
                    rb.backend.uploadAsync(from: image.buffer, offset: entry.scalings, pitch: stack * 4,
                                           to: buf.scalings.rows(slot, 1), rows: 1, rowBytes: stack * 4)
                }
            }
        }
        // The same scalings on the host (every rank's image holds the same), for batched shrinks.
        for layer in 0..<base.numLayers {
            for g in groups {
                let entry = images[0].entries[layer][g]!, stack = Self.modules(of: g).count
                for m in 0..<stack {
                    slotScalings[layer][g]![slot * stack + m] = (images[0].buffer.pointer + entry.scalings).load(fromByteOffset: 4 * m, as: Float.self)
                }
            }
        }
    }

    /// An adapter packed for one rank's slots in host memory the backend copies from
    /// asynchronously, in its weight dtype: per layer and group, A as `stack` blocks of
    /// `rank × in` (modules of lower rank, or not adapted, zero-padded), B as `out × rank`, then the
    /// modules' scalings in f32 (0 for modules the adapter leaves alone).
    struct StagedImage {
        let buffer: HostBuffer
        let rank: Int
        let entries: [[ProjectionGroup: (a: Int, b: Int, scalings: Int)]]
    }

    /// Each rank's staged image of an adapter: packed at registration (`stageAhead`), or here when
    /// the host cache had dropped it; kept while the host cache holds the adapter.
    private func stagedImages(for ref: AdapterRef) throws -> [StagedImage] {
        if let images = stagedLock.withLock({ staged[ref.uid] }) { return images }
        let images = try ranks.map { try stage(try hostCache.weights(for: ref, base: base), for: $0) }
        keep(images, for: ref.uid)
        return images
    }

    /// Whether the adapter's slot image is packed in host memory (a slot load then only queues copies).
    public func isStaged(_ uid: UInt64) -> Bool { stagedLock.withLock { staged[uid] != nil } }

    /// Packs a freshly registered adapter for every rank.
    func stageAhead(_ ref: AdapterRef, _ adapter: PEFTAdapter) throws {
        keep(try ranks.map { try stage(adapter, for: $0) }, for: ref.uid)
    }

    /// Keeps `images` and lets go of those whose adapter the host cache no longer holds.
    private func keep(_ images: [StagedImage], for uid: UInt64) {
        stagedLock.withLock {
            staged = staged.filter { hostCache.isResident($0.key) }
            staged[uid] = images
        }
    }

    private func stage(_ adapter: PEFTAdapter, for rb: RankBuffers) throws -> StagedImage {
        let dtype = rb.backend.weightDType, e = dtype.byteCount, ra = max(adapter.maxRank, 1)
        var layout: [[ProjectionGroup: (a: Int, b: Int, scalings: Int)]] = []
        var bytes = 0
        for layer in 0..<base.numLayers {
            var entries: [ProjectionGroup: (a: Int, b: Int, scalings: Int)] = [:]
            for g in groups {
                let buf = rb.layers[layer][g]!, stack = Self.modules(of: g).count
                let a = bytes, b = a + stack * ra * buf.a.shape[2] * e, sc = b + buf.outOffsets.last! * ra * e
                entries[g] = (a, b, sc)
                bytes = (sc + stack * 4 + 15) & ~15
            }
            layout.append(entries)
        }
        let buffer = try rb.backend.allocateHost(byteCount: bytes)
        buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        func store(_ values: ArraySlice<Float>, at offset: Int) {
            values.withUnsafeBufferPointer { v in
                let p = buffer.pointer + offset
                switch dtype {
                case .bf16:
                    let out = p.bindMemory(to: UInt16.self, capacity: v.count)
                    for i in 0..<v.count { out[i] = HalfConversion.floatToBF16(v[i]) }
                case .f16:
                    let out = p.bindMemory(to: UInt16.self, capacity: v.count)
                    for i in 0..<v.count { out[i] = HalfConversion.floatToF16(v[i]) }
                default:
                    p.copyMemory(from: v.baseAddress!, byteCount: 4 * v.count)
                }
            }
        }
        for layer in 0..<base.numLayers {
            for g in groups {
                let buf = rb.layers[layer][g]!, entry = layout[layer][g]!
                let cols = Self.inputColumns(Self.modules(of: g)[0], base, rb.shard)
                for (m, module) in Self.modules(of: g).enumerated() {
                    guard let w = adapter.layers[layer][module] else { continue }
                    let fullIn = module.shape(base).in
                    for j in 0..<w.rank {
                        let src = j * fullIn + cols.lowerBound
                        store(w.a[src..<(src + cols.count)], at: entry.a + ((m * ra + j) * cols.count) * e)
                    }
                    for (i, row) in Self.outputRows(module, base, rb.shard).enumerated() {
                        store(w.b[(row * w.rank)..<(row * w.rank + w.rank)], at: entry.b + ((buf.outOffsets[m] + i) * ra) * e)
                    }
                    (buffer.pointer + entry.scalings).storeBytes(of: w.scaling, toByteOffset: 4 * m, as: Float.self)
                }
            }
        }
        return StagedImage(buffer: buffer, rank: ra, entries: layout)
    }
}
