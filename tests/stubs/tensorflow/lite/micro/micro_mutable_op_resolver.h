// A syntax-check stand-in for TFLite Micro's micro_mutable_op_resolver.h.
// Only the API the generated sources use: the op-count template parameter and
// the Add* methods (names as in TFLite Micro), so that g++ -c rejects a wrong
// method name or a resolver that is too small for its registrations.
#ifndef KERAS_DISTILL_TEST_STUB_MICRO_MUTABLE_OP_RESOLVER_H_
#define KERAS_DISTILL_TEST_STUB_MICRO_MUTABLE_OP_RESOLVER_H_

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

namespace tflite {

template <unsigned int tOpCount>
class MicroMutableOpResolver {
 public:
  static_assert(tOpCount > 0, "a resolver needs room for at least one op");
  TfLiteStatus AddAbs() { return Register(); }
  TfLiteStatus AddAdd() { return Register(); }
  TfLiteStatus AddAddN() { return Register(); }
  TfLiteStatus AddArgMax() { return Register(); }
  TfLiteStatus AddArgMin() { return Register(); }
  TfLiteStatus AddAveragePool2D() { return Register(); }
  TfLiteStatus AddBatchMatMul() { return Register(); }
  TfLiteStatus AddBatchToSpaceNd() { return Register(); }
  TfLiteStatus AddCast() { return Register(); }
  TfLiteStatus AddCeil() { return Register(); }
  TfLiteStatus AddCircularBuffer() { return Register(); }
  TfLiteStatus AddConcatenation() { return Register(); }
  TfLiteStatus AddConv2D() { return Register(); }
  TfLiteStatus AddCos() { return Register(); }
  TfLiteStatus AddCumSum() { return Register(); }
  TfLiteStatus AddDepthToSpace() { return Register(); }
  TfLiteStatus AddDepthwiseConv2D() { return Register(); }
  TfLiteStatus AddDequantize() { return Register(); }
  TfLiteStatus AddDetectionPostprocess() { return Register(); }
  TfLiteStatus AddElu() { return Register(); }
  TfLiteStatus AddEqual() { return Register(); }
  TfLiteStatus AddEthosU() { return Register(); }
  TfLiteStatus AddExp() { return Register(); }
  TfLiteStatus AddExpandDims() { return Register(); }
  TfLiteStatus AddFill() { return Register(); }
  TfLiteStatus AddFloor() { return Register(); }
  TfLiteStatus AddFloorDiv() { return Register(); }
  TfLiteStatus AddFloorMod() { return Register(); }
  TfLiteStatus AddFullyConnected() { return Register(); }
  TfLiteStatus AddGather() { return Register(); }
  TfLiteStatus AddGatherNd() { return Register(); }
  TfLiteStatus AddGreater() { return Register(); }
  TfLiteStatus AddGreaterEqual() { return Register(); }
  TfLiteStatus AddHardSwish() { return Register(); }
  TfLiteStatus AddIf() { return Register(); }
  TfLiteStatus AddL2Normalization() { return Register(); }
  TfLiteStatus AddL2Pool2D() { return Register(); }
  TfLiteStatus AddLeakyRelu() { return Register(); }
  TfLiteStatus AddLess() { return Register(); }
  TfLiteStatus AddLessEqual() { return Register(); }
  TfLiteStatus AddLog() { return Register(); }
  TfLiteStatus AddLogSoftmax() { return Register(); }
  TfLiteStatus AddLogicalAnd() { return Register(); }
  TfLiteStatus AddLogicalNot() { return Register(); }
  TfLiteStatus AddLogicalOr() { return Register(); }
  TfLiteStatus AddLogistic() { return Register(); }
  TfLiteStatus AddMaximum() { return Register(); }
  TfLiteStatus AddMaxPool2D() { return Register(); }
  TfLiteStatus AddMean() { return Register(); }
  TfLiteStatus AddMinimum() { return Register(); }
  TfLiteStatus AddMirrorPad() { return Register(); }
  TfLiteStatus AddMul() { return Register(); }
  TfLiteStatus AddNeg() { return Register(); }
  TfLiteStatus AddNotEqual() { return Register(); }
  TfLiteStatus AddPack() { return Register(); }
  TfLiteStatus AddPad() { return Register(); }
  TfLiteStatus AddPadV2() { return Register(); }
  TfLiteStatus AddPrelu() { return Register(); }
  TfLiteStatus AddQuantize() { return Register(); }
  TfLiteStatus AddReduceMax() { return Register(); }
  TfLiteStatus AddRelu() { return Register(); }
  TfLiteStatus AddRelu6() { return Register(); }
  TfLiteStatus AddReshape() { return Register(); }
  TfLiteStatus AddResizeBilinear() { return Register(); }
  TfLiteStatus AddResizeNearestNeighbor() { return Register(); }
  TfLiteStatus AddRound() { return Register(); }
  TfLiteStatus AddRsqrt() { return Register(); }
  TfLiteStatus AddShape() { return Register(); }
  TfLiteStatus AddSin() { return Register(); }
  TfLiteStatus AddSoftmax() { return Register(); }
  TfLiteStatus AddSpaceToBatchNd() { return Register(); }
  TfLiteStatus AddSpaceToDepth() { return Register(); }
  TfLiteStatus AddSplit() { return Register(); }
  TfLiteStatus AddSplitV() { return Register(); }
  TfLiteStatus AddSqrt() { return Register(); }
  TfLiteStatus AddSquare() { return Register(); }
  TfLiteStatus AddSquaredDifference() { return Register(); }
  TfLiteStatus AddSqueeze() { return Register(); }
  TfLiteStatus AddStridedSlice() { return Register(); }
  TfLiteStatus AddSub() { return Register(); }
  TfLiteStatus AddSum() { return Register(); }
  TfLiteStatus AddSvdf() { return Register(); }
  TfLiteStatus AddTanh() { return Register(); }
  TfLiteStatus AddTranspose() { return Register(); }
  TfLiteStatus AddTransposeConv() { return Register(); }
  TfLiteStatus AddUnidirectionalSequenceLSTM() { return Register(); }
  TfLiteStatus AddUnpack() { return Register(); }
  TfLiteStatus AddZerosLike() { return Register(); }

  unsigned int GetRegistrationLength() { return registered_; }

 private:
  TfLiteStatus Register() {
    return registered_ < tOpCount ? (++registered_, kTfLiteOk) : kTfLiteError;
  }
  unsigned int registered_ = 0;
};

}  // namespace tflite

#endif  // KERAS_DISTILL_TEST_STUB_MICRO_MUTABLE_OP_RESOLVER_H_
