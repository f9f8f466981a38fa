// Package launcher stands in for HPE's Slurm/PBS launcher client, which Determined's go.mod
// replaces with a directory its module zip lacks. Only the dispatcher resource manager uses it;
// the agent resource manager this project runs never does. Every call fails.
package launcher

import (
	"context"
	"errors"
	"net/http"
)

// ErrUnsupported is what every stubbed API call returns.
var ErrUnsupported = errors.New("the HPC launcher is not built into this master")

type DispatchState string

const (
	PENDING     DispatchState = "PENDING"
	RUNNING     DispatchState = "RUNNING"
	TERMINATING DispatchState = "TERMINATING"
	FAILED      DispatchState = "FAILED"
	COMPLETED   DispatchState = "COMPLETED"
)

type contextKey string

// ContextAccessToken keys the bearer token in a request context.
var ContextAccessToken = contextKey("accesstoken")

func PtrString(v string) *string { return &v }

type ResourceRequirements struct{}

func NewResourceRequirementsWithDefaults() *ResourceRequirements { return &ResourceRequirements{} }
func (r *ResourceRequirements) SetInstances(map[string]int32)    {}
func (r *ResourceRequirements) SetCores(map[string]float32)      {}
func (r *ResourceRequirements) SetGpus(map[string]int32)         {}

type Data struct{}

func NewData() *Data             { return &Data{} }
func (d *Data) SetName(string)   {}
func (d *Data) SetSource(string) {}
func (d *Data) SetTarget(string) {}
func (d *Data) SetReadOnly(bool) {}

type LaunchParameters struct{}

func NewLaunchParameters() *LaunchParameters                   { return &LaunchParameters{} }
func (l *LaunchParameters) SetMode(string)                     {}
func (l *LaunchParameters) SetConfiguration(map[string]string) {}
func (l *LaunchParameters) SetCustom(map[string][]string)      {}
func (l *LaunchParameters) SetArguments([]string)              {}
func (l *LaunchParameters) SetImages(map[string]string)        {}
func (l *LaunchParameters) SetData([]Data)                     {}
func (l *LaunchParameters) SetEnvironment(map[string]string)   {}

// Payload is one job of a manifest.
type Payload struct {
	Name *string
}

func NewPayloadWithDefaults() *Payload                          { return &Payload{} }
func (p *Payload) SetName(string)                               {}
func (p *Payload) SetId(string)                                 {}
func (p *Payload) SetVersion(string)                            {}
func (p *Payload) SetCarriers([]string)                         {}
func (p *Payload) SetLaunchParameters(LaunchParameters)         {}
func (p *Payload) SetResourceRequirements(ResourceRequirements) {}

type ClientMetadata struct{}

func NewClientMetadataWithDefaults() *ClientMetadata { return &ClientMetadata{} }
func (c *ClientMetadata) SetName(string)             {}

// Manifest is what a launch sends.
type Manifest struct {
	Payloads *[]Payload
}

func NewManifest(string, ClientMetadata) *Manifest { return &Manifest{} }
func (m *Manifest) SetPayloads([]Payload)          {}

type WarehouseMetadata struct{}

// OwnedResourceReference names a launched job and its owner.
type OwnedResourceReference struct {
	Name  *string
	Owner *string
}

// Event is one message of a launched job.
type Event struct {
	Reporter *string
	Message  *string
	Level    *string
}

// DispatchInfo describes a launched job.
type DispatchInfo struct {
	DispatchId               *string
	LaunchingUser            *string
	State                    *DispatchState
	LaunchedCapsuleReference *OwnedResourceReference
	Events                   []Event
}

func (d DispatchInfo) GetDispatchId() string    { return deref(d.DispatchId) }
func (d DispatchInfo) GetLaunchingUser() string { return deref(d.LaunchingUser) }
func (d DispatchInfo) GetState() DispatchState {
	if d.State == nil {
		return ""
	}
	return *d.State
}
func (d DispatchInfo) GetStateOk() (*DispatchState, bool) { return d.State, d.State != nil }
func (d DispatchInfo) GetEvents() []Event                 { return d.Events }
func (d DispatchInfo) GetAdditionalPropertiesField() map[string]interface{} {
	return nil
}
func (d DispatchInfo) GetLaunchedCapsuleReference() OwnedResourceReference {
	if d.LaunchedCapsuleReference == nil {
		return OwnedResourceReference{}
	}
	return *d.LaunchedCapsuleReference
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

type GenericOpenAPIError struct{}

func (e GenericOpenAPIError) Error() string { return ErrUnsupported.Error() }
func (e GenericOpenAPIError) Body() []byte  { return nil }

type Configuration struct {
	Host          string
	Scheme        string
	DefaultHeader map[string]string
	HTTPClient    *http.Client
}

func NewConfiguration() *Configuration { return &Configuration{DefaultHeader: map[string]string{}} }

// APIClient groups the launcher's API services; each call returns ErrUnsupported.
type APIClient struct {
	InfoApi       *InfoApiService
	LaunchApi     *LaunchApiService
	MonitoringApi *MonitoringApiService
	RunningApi    *RunningApiService
	TerminatedApi *TerminatedApiService
}

func NewAPIClient(*Configuration) *APIClient {
	return &APIClient{&InfoApiService{}, &LaunchApiService{}, &MonitoringApiService{},
		&RunningApiService{}, &TerminatedApiService{}}
}

type InfoApiService struct{}
type LaunchApiService struct{}
type MonitoringApiService struct{}
type RunningApiService struct{}
type TerminatedApiService struct{}

// VersionRequest asks for the server version.
type VersionRequest struct{}

func (InfoApiService) GetServerVersion(context.Context) VersionRequest { return VersionRequest{} }
func (VersionRequest) Execute() (string, *http.Response, error) {
	return "", nil, ErrUnsupported
}

// DispatchRequest launches, reads or terminates one job.
type DispatchRequest struct{}

func (LaunchApiService) Launch(context.Context) DispatchRequest { return DispatchRequest{} }
func (r DispatchRequest) Manifest(Manifest) DispatchRequest     { return r }
func (r DispatchRequest) Impersonate(string) DispatchRequest    { return r }
func (r DispatchRequest) DispatchId(string) DispatchRequest     { return r }
func (r DispatchRequest) Refresh(bool) DispatchRequest          { return r }
func (r DispatchRequest) Force(bool) DispatchRequest            { return r }
func (DispatchRequest) Execute() (DispatchInfo, *http.Response, error) {
	return DispatchInfo{}, nil, ErrUnsupported
}
func (MonitoringApiService) GetEnvironmentStatus(context.Context, string, string) DispatchRequest {
	return DispatchRequest{}
}
func (RunningApiService) TerminateRunning(context.Context, string, string) DispatchRequest {
	return DispatchRequest{}
}

// DetailsRequest reads a job's manifest.
type DetailsRequest struct{}

func (MonitoringApiService) GetEnvironmentDetails(context.Context, string, string) DetailsRequest {
	return DetailsRequest{}
}
func (DetailsRequest) Execute() (Manifest, *http.Response, error) {
	return Manifest{}, nil, ErrUnsupported
}

// DeleteRequest removes a job's environment.
type DeleteRequest struct{}

func (MonitoringApiService) DeleteEnvironment(context.Context, string, string) DeleteRequest {
	return DeleteRequest{}
}
func (DeleteRequest) Execute() (*http.Response, error) { return nil, ErrUnsupported }

// LogRequest reads a job's log file.
type LogRequest struct{}

func (MonitoringApiService) LoadEnvironmentLog(context.Context, string, string, string) LogRequest {
	return LogRequest{}
}
func (r LogRequest) Range_(string) LogRequest { return r }
func (LogRequest) Execute() (string, *http.Response, error) {
	return "", nil, ErrUnsupported
}

// ListRequest lists jobs by owner.
type ListRequest struct{}

func (RunningApiService) ListAllRunning(context.Context) ListRequest       { return ListRequest{} }
func (TerminatedApiService) ListAllTerminated(context.Context) ListRequest { return ListRequest{} }
func (r ListRequest) EventLimit(int32) ListRequest                         { return r }
func (ListRequest) Execute() (map[string][]DispatchInfo, *http.Response, error) {
	return nil, nil, ErrUnsupported
}
