; Inno Setup script for EffiCell (Windows installer with Start-menu entry, file association, uninstaller).
;
; Build (on Windows, after `pyinstaller --noconfirm build.spec` made dist\efficell\):
;     iscc installers\windows\efficell.iss                     -> dist\EffiCell-<version>-<flavour>-setup.exe
;     iscc /DFlavour=cuda installers\windows\efficell.iss      (bundle built with the CUDA torch)
; All paths are relative to this file. Version: pass /DAppVersion=x.y.z (defaults below).

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Flavour
  #define Flavour "cpu"
#endif
#define AppName "EffiCell"
#define Bundle "..\..\dist\efficell"
#define ProjectExt ".efficell"
#define ProgId "EffiCell.Project"

[Setup]
AppId={{6C1E7A52-3F0B-4B7E-9B1A-EFF1CE11A001}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion} ({#Flavour})
AppPublisher=EffiCell contributors
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Per-user install by default (no administrator needed on managed lab PCs); admins may choose all users.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
ChangesAssociations=yes
OutputDir=..\..\dist
OutputBaseFilename=EffiCell-{#AppVersion}-{#Flavour}-setup
SetupIconFile=efficell.ico
UninstallDisplayIcon={app}\efficell-gui.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "associate"; Description: "Open EffiCell project files ({#ProjectExt}) with EffiCell"; GroupDescription: "File association:"

[Files]
Source: "{#Bundle}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\efficell-gui.exe"; WorkingDir: "{userdocs}"
Name: "{group}\{#AppName} self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\efficell.exe"" --selftest"; WorkingDir: "{userdocs}"
Name: "{group}\Uninstall {#AppName}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\efficell-gui.exe"; Tasks: desktopicon

[Registry]
; HKA = HKLM for all-users installs, HKCU for per-user installs. Removed again by the uninstaller.
Root: HKA; Subkey: "Software\Classes\{#ProjectExt}"; ValueType: string; ValueName: ""; ValueData: "{#ProgId}"; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProjectExt}\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}"; ValueType: string; ValueName: ""; ValueData: "EffiCell project"; Flags: uninsdeletekey; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\efficell-gui.exe,0"; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\efficell-gui.exe"" ""%1"""; Tasks: associate
Root: HKA; Subkey: "Software\Classes\Applications\efficell-gui.exe\SupportedTypes"; ValueType: string; ValueName: "{#ProjectExt}"; ValueData: ""; Flags: uninsdeletekey

[Run]
; Check the installation (device found, model loads, sample segments) before first use.
Filename: "{app}\efficell.exe"; Parameters: "--selftest"; StatusMsg: "Checking the installation (self-test)..."; Flags: runhidden waituntilterminated
Filename: "{app}\efficell-gui.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only what the program itself wrote inside its folder (compiled caches); user projects and settings are kept.
Type: filesandordirs; Name: "{app}\_internal\__pycache__"
