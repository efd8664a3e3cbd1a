// Command kstatus prints how kstatus judges Kubernetes objects: status.Compute of
// sigs.k8s.io/cli-utils pkg/kstatus/status, the library Flux reads an object's health with.
//
// Input on stdin: one JSON array of objects, each as the API server serves it. Output on stdout:
// one JSON array, in the same order, of {"status", "message", "reason"}; reason is that of the
// Reconciling or Stalled condition kstatus derived ("" when it derived none). An object kstatus
// cannot judge ends the run with exit status 1 and a message naming it on stderr.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fail("stdin is not one JSON array of objects: %v", err)
	}
	verdicts := make([]verdict, 0, len(objects))
	for i, raw := range objects {
		// Decoded as client-go decodes an API response: whole numbers become int64, which is
		// what kstatus's generation check reads.
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(raw); err != nil {
			fail("object %d is not a Kubernetes object: %v", i, err)
		}
		result, err := status.Compute(object)
		if err != nil {
			fail("object %d: %v", i, err)
		}
		judged := verdict{Status: string(result.Status), Message: result.Message}
		if len(result.Conditions) > 0 {
			judged.Reason = result.Conditions[0].Reason
		}
		verdicts = append(verdicts, judged)
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		fail("writing the verdicts: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
