import Foundation
import LoomCore
import Testing
@testable import CUDABackend

/// NCCL is opened at run time: where it is missing, a named error lists what was tried; where it is
/// present, the version reads back. The collectives themselves need GPUs: `loom gpu-check --tp-size 2`.
@Suite struct NCCLTests {
    @Test func missingOrPresentLibraryIsReportedByName() throws {
        do {
            let nccl = try NCCL()
            #expect(nccl.version.contains("."))
        } catch let error as CUDAError {
            guard case .libraryNotFound(let library, let tried, _) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(library.contains("libnccl"))
            #expect(tried.contains("libnccl.so.2"))
            #expect(error.description.contains("--tp-size"))
        }
    }

    @Test func wheelSearchFindsOnlyExistingFiles() {
        for path in NCCL.pythonWheelPaths() { #expect(FileManager.default.fileExists(atPath: path)) }
    }
}
