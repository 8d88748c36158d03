<#
.SYNOPSIS
    Installs jsagent.exe, the jsacc node agent, as a Windows service that is restarted whenever it
    stops on its own (crash, fatal error, or exit code 75: "restart requested").

.DESCRIPTION
    Run in an elevated PowerShell (5.1 or 7). Running it again re-installs (the service is stopped,
    deleted and created anew; the config file and the data directory are kept).

    Layout it creates:
      <InstallDir>\bin\jsagent.exe      the agent; $root in commands is <InstallDir>
      <ConfigPath>                      agent.toml (copied from the example when missing: edit it)
      <DataDir>                         the agent's state ($agentroot), readable by SYSTEM and
                                        Administrators only (the token file belongs here too)

    Before the service can connect, agent.toml needs controller, gid, nid, token_file and ca_cert
    (see deploy\config\agent.toml). The token comes from `jsacc token add --gid G --nid N` on the
    controller side; the CA file is the controller's certificate (or the CA that signed it).

    The service runs as LocalSystem, so jobs can do what an administrator can. Recovery actions:
    restart after 5 s, 5 s, then 30 s for every further failure; the failure count resets after a
    day. The failure flag is set so that a stop with a non-zero exit code (75 included) triggers
    them too.

    The service runs `jsagent.exe --service`: the agent answers the Service Control Manager
    itself. A stop (Stop-Service, sc.exe stop, a system shutdown) stops it as SIGTERM does on
    Linux: running jobs are ended and reported, remembered jobs kept for the next start, the
    outbox flushed. Its exit code becomes the service's (75, "restart requested", is a
    service-specific error, so the recovery actions start it again). Its log is
    <DataDir>\jsagent.log (one older file kept as jsagent.log.1, from 10 MB).

    -Nssm C:\path\to\nssm.exe registers it through NSSM instead (as a console program), for
    those who manage their services with NSSM.

.PARAMETER Source
    jsagent.exe to install. Default: jsagent.exe beside this script.
.PARAMETER InstallDir
    Default: $env:ProgramFiles\jsagent
.PARAMETER ConfigPath
    Default: $env:ProgramData\jsagent\agent.toml
.PARAMETER DataDir
    Default: $env:ProgramData\jsagent\data
.PARAMETER ServiceName
    Default: jsagent
.PARAMETER Nssm
    Path to nssm.exe: register through NSSM (console mode) instead of directly (service mode).
.PARAMETER NoStart
    Install but do not start the service.
.PARAMETER Uninstall
    Stop and remove the service (files and data are left in place).

.EXAMPLE
    .\install-jsagent.ps1 -Source .\target\release\jsagent.exe
.EXAMPLE
    .\install-jsagent.ps1 -InstallDir D:\jsagent -ConfigPath D:\jsagent\agent.toml -DataDir D:\jsagent\data
.EXAMPLE
    .\install-jsagent.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Source = (Join-Path $PSScriptRoot 'jsagent.exe'),
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'jsagent'),
    [string]$ConfigPath = (Join-Path $env:ProgramData 'jsagent\agent.toml'),
    [string]$DataDir = (Join-Path $env:ProgramData 'jsagent\data'),
    [string]$ServiceName = 'jsagent',
    [string]$Nssm = '',
    [switch]$NoStart,
    [switch]$Uninstall
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Invoke-Native {
    # Runs a native program and fails on a non-zero exit code (sc.exe does not throw).
    param([string]$Exe, [string[]]$Arguments)
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

function Remove-JsagentService {
    $svc = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($null -eq $svc) { return }
    if ($svc.Status -ne 'Stopped') {
        Write-Host "Stopping service $ServiceName"
        Stop-Service -Name $ServiceName -Force
        $svc.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(90))
    }
    Write-Host "Removing service $ServiceName"
    Invoke-Native 'sc.exe' @('delete', $ServiceName)
    # the SCM deletes the service once every handle to it is closed
    for ($i = 0; $i -lt 50 -and (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue); $i++) {
        Start-Sleep -Milliseconds 200
    }
}

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run this script in an elevated PowerShell (Run as administrator).'
}

if ($Uninstall) {
    Remove-JsagentService
    Write-Host "Service $ServiceName removed. Left in place: $InstallDir, $ConfigPath, $DataDir"
    return
}

if (-not (Test-Path -LiteralPath $Source -PathType Leaf)) {
    throw "jsagent.exe not found at $Source (pass -Source)"
}

# Stop the old service first: a running jsagent.exe cannot be overwritten.
Remove-JsagentService

$binDir = Join-Path $InstallDir 'bin'
$exe = Join-Path $binDir 'jsagent.exe'
foreach ($dir in @($binDir, (Split-Path -Parent $ConfigPath), $DataDir)) {
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
}
Copy-Item -LiteralPath $Source -Destination $exe -Force
Write-Host "Installed $exe"

# The data directory holds the job database, the outbox and usually the token: SYSTEM and
# Administrators only.
Invoke-Native 'icacls.exe' @($DataDir, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F', '/Q')

if (-not (Test-Path -LiteralPath $ConfigPath)) {
    $example = Join-Path $PSScriptRoot '..\config\agent.toml'
    if (Test-Path -LiteralPath $example) {
        Copy-Item -LiteralPath $example -Destination $ConfigPath
    } else {
        $tokenPath = (Join-Path $DataDir 'agent.token') -replace '\\', '/'
        $caPath = (Join-Path (Split-Path -Parent $ConfigPath) 'controller-ca.pem') -replace '\\', '/'
        @(
            '# jsagent configuration: see deploy/config/agent.toml for every key.',
            'controller = "https://jsacc.example.net:4000"',
            'gid = 1',
            'nid = 1',
            "token_file = `"$tokenPath`"",
            "ca_cert = `"$caPath`""
        ) | Set-Content -LiteralPath $ConfigPath -Encoding ASCII
    }
    Write-Warning "Created $ConfigPath from the example: set controller, gid, nid, token_file and ca_cert in it."
}

$agentArgs = @('-c', $ConfigPath, '--data-dir', $DataDir)

if ($Nssm) {
    if (-not (Test-Path -LiteralPath $Nssm -PathType Leaf)) { throw "nssm.exe not found at $Nssm" }
    Invoke-Native $Nssm (@('install', $ServiceName, $exe) + $agentArgs)
    Invoke-Native $Nssm @('set', $ServiceName, 'DisplayName', 'jsacc node agent')
    Invoke-Native $Nssm @('set', $ServiceName, 'Description', 'jsagent: runs jsacc jobs on this node')
    Invoke-Native $Nssm @('set', $ServiceName, 'AppDirectory', $DataDir)
    Invoke-Native $Nssm @('set', $ServiceName, 'Start', 'SERVICE_DELAYED_AUTO_START')
    # restart after every exit (75 = restart requested included), 3 s apart
    Invoke-Native $Nssm @('set', $ServiceName, 'AppExit', 'Default', 'Restart')
    Invoke-Native $Nssm @('set', $ServiceName, 'AppRestartDelay', '3000')
    # on stop: Ctrl-C to the agent, 60 s to finish its outbox, then the whole process tree ends
    Invoke-Native $Nssm @('set', $ServiceName, 'AppStopMethodConsole', '60000')
    Invoke-Native $Nssm @('set', $ServiceName, 'AppKillProcessTree', '1')
    $log = Join-Path $DataDir 'jsagent.log'
    Invoke-Native $Nssm @('set', $ServiceName, 'AppStdout', $log)
    Invoke-Native $Nssm @('set', $ServiceName, 'AppStderr', $log)
    Invoke-Native $Nssm @('set', $ServiceName, 'AppRotateFiles', '1')
    Invoke-Native $Nssm @('set', $ServiceName, 'AppRotateBytes', '104857600')
    # plain log lines, without terminal colour codes
    Invoke-Native $Nssm @('set', $ServiceName, 'AppEnvironmentExtra', 'NO_COLOR=1')
} else {
    $quoted = (@('--service') + $agentArgs | ForEach-Object { if ($_ -match '\s') { "`"$_`"" } else { $_ } }) -join ' '
    New-Service -Name $ServiceName `
        -BinaryPathName "`"$exe`" $quoted" `
        -DisplayName 'jsacc node agent' `
        -Description 'jsagent: runs jsacc jobs on this node' `
        -StartupType Automatic | Out-Null
    # start once the network is up
    Invoke-Native 'sc.exe' @('config', $ServiceName, 'start=', 'delayed-auto')
    # recovery: restart after 5 s, 5 s, then 30 s for every further failure; reset the count after a day
    Invoke-Native 'sc.exe' @('failure', $ServiceName, 'reset=', '86400', 'actions=', 'restart/5000/restart/5000/restart/30000')
    # also run the recovery actions when the service stops with a non-zero exit code (75: restart requested)
    Invoke-Native 'sc.exe' @('failureflag', $ServiceName, '1')
    # plain log lines, without terminal colour codes
    Set-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName" -Name 'Environment' `
        -Type MultiString -Value @('NO_COLOR=1')
}
Write-Host "Registered service $ServiceName"

if (-not $NoStart) {
    Start-Service -Name $ServiceName
    (Get-Service -Name $ServiceName).WaitForStatus('Running', [TimeSpan]::FromSeconds(30))
    Write-Host "Service $ServiceName is running."
    Write-Host "Agent log: $(Join-Path $DataDir 'jsagent.log')"
} else {
    Write-Host "Start it with: Start-Service $ServiceName"
}
